"""recommend's web pages and the links of a real rendered email: notify signs, recommend verifies.

Every misuse of a link (tampered, expired, replayed, wrong purpose) changes nothing and gets a plain
page; a GET never changes anything (mail scanners fetch every link).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import time_machine
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_notify.render import render_digest
from paperwire_recommend.digest import Schedule
from paperwire_recommend.store import Interest, Store, Subscription, User, feedback
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.links import LinkSigner, token_id
from paperwire_shared.vectors import QdrantEdgeStore, StoredPaper
from tests.fakes import HashingEncoder
from tests.support.auth import admin_headers
from tests.support.recommend import asgi_client, recommend_app

SECRET = "s" * 8 + "0123456789abcdefghijklmnopqrstuvwxyzABCD"
BASE = "http://test"
NOW = datetime(2026, 11, 24, 7, tzinfo=UTC)


@dataclass
class Site:
    client: httpx.AsyncClient
    store: Store
    signer: LinkSigner
    app: object
    vectors: QdrantEdgeStore | None = None

    def subscription(self, user: User) -> Subscription:
        return self.store.get_subscription(user, Schedule())

    def feedback_rows(self) -> list[tuple[str, str, str | None]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(feedback.c.paper_id, feedback.c.kind, feedback.c.reason))
            return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    broker = RedisBroker()
    app = recommend_app(tmp_path, broker=broker, store=store, vectors=vectors, secret_key=SECRET)
    async with (
        TestRedisBroker(broker),
        asgi_client(app, BASE, headers=admin_headers(tmp_path)) as client,
    ):
        yield Site(client, store, LinkSigner([SECRET]), app, vectors)
    vectors.close()


def sent_digest(site: Site, user: User) -> DigestDue:
    """A digest recorded as notify would have received it: the papers the links are about."""
    digest = DigestDue(
        digest_key=f"{user.id}/2026-11-24",
        user_id=user.id,
        email=user.email,
        papers=(
            RankedPaper(
                paper_id="2611.00001",
                title="LoRA <b>revisited</b>",
                url="https://arxiv.org/abs/2611.00001",
                score=0.9,
                reason='matches your interest "LLM tuning"',
            ),
        ),
        created_at=NOW,
    )
    site.store.record_digest(
        digest.digest_key, user.id, ["2611.00001"], digest.model_dump(mode="json"), NOW
    )
    site.store.mark_published(digest.digest_key, NOW)
    return digest


def email_links(digest: DigestDue) -> dict[str, str]:
    """The links of the email notify renders for ``digest``, by what they do (paths only)."""
    msg = render_digest(digest, sender="p <p@x.org>", base_url=BASE, signer=LinkSigner([SECRET]))
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    hrefs = [h.removeprefix(BASE) for h in re.findall(r'href="([^"]+)"', html)]
    feedback_links = [h for h in hrefs if h.startswith("/feedback/")]
    return {
        "like": feedback_links[0],
        "dislike": feedback_links[1],
        "off_topic": feedback_links[2],
        "low_quality": feedback_links[3],
        "manage": next(h for h in hrefs if h.startswith("/manage/")),
        "unsubscribe": msg["List-Unsubscribe"].strip("<>").removeprefix(BASE),
    }


def user_of(site: Site, email: str = "ada@example.org", **schedule: object) -> User:
    user = site.store.create_user(
        email, "daily", 10, [Interest("LLM tuning", "lora adapters")], NOW
    )
    site.store.save_subscription(Subscription(user.id, Schedule(**schedule), NOW), NOW)  # type: ignore[arg-type]
    return user


# Subscribe


async def test_the_subscribe_form_creates_a_user_with_their_schedule(site: Site) -> None:
    form = (await site.client.get("/subscribe")).text
    assert '<label for="email">' in form and '<label for="timezone">' in form

    response = await site.client.post(
        "/subscribe",
        data={
            "email": "grace@example.org",
            "interests": "Compilers: optimising compilers for GPUs\nprotein folding",
            "frequency": "weekly",
            "weekday": "3",
            "send_hour": "8",
            "timezone": "Europe/Paris",
            "max_papers": "5",
        },
    )

    assert response.status_code == 201
    assert "You are subscribed" in response.text and "every Thursday at 08:00" in response.text
    user = site.store.find_user("grace@example.org")
    assert user is not None and user.max_papers == 5
    assert [(i.name, i.text) for i in user.interests] == [
        ("Compilers", "optimising compilers for GPUs"),
        ("protein folding", "protein folding"),
    ]
    schedule = site.subscription(user).schedule
    assert (schedule.frequency, schedule.weekday, schedule.send_hour, schedule.timezone) == (
        "weekly",
        3,
        8,
        "Europe/Paris",
    )
    manage = re.search(r'href="(/manage/[^"]+)"', response.text)
    assert manage and (await site.client.get(manage.group(1))).status_code == 200


async def test_an_invalid_subscription_is_shown_again_with_each_problem(site: Site) -> None:
    response = await site.client.post(
        "/subscribe",
        data={"email": "nope", "interests": "", "timezone": "Mars/Base", "send_hour": "7"},
    )

    assert response.status_code == 422
    assert 'role="alert"' in response.text
    for problem in (
        "Enter your email address",
        "Write at least one interest",
        "Choose a time zone",
    ):
        assert problem in response.text
    assert 'aria-invalid="true"' in response.text
    assert site.store.list_users(10, 0) == []


async def test_an_address_already_subscribed_is_not_subscribed_twice(site: Site) -> None:
    user_of(site)
    data = {"email": "ada@example.org", "interests": "x", "timezone": "UTC", "send_hour": "6"}

    assert (await site.client.post("/subscribe", data=data)).status_code == 409
    assert len(site.store.list_users(10, 0)) == 1


# Feedback


async def test_a_feedback_link_from_the_email_records_feedback_only_when_posted(site: Site) -> None:
    user = user_of(site)
    links = email_links(sent_digest(site, user))

    page = await site.client.get(links["off_topic"])  # what a mail scanner does
    assert page.status_code == 200
    assert "LoRA &lt;b&gt;revisited&lt;/b&gt;" in page.text and "off-topic" in page.text
    assert site.feedback_rows() == []

    done = await site.client.post(links["off_topic"])  # what the page does in a browser

    assert done.status_code == 200 and "Thank you" in done.text
    assert site.feedback_rows() == [("2611.00001", "dislike", "off-topic")]
    assert "2611.00001" in site.store.excluded_papers(user.id)  # applied before the next digest


async def test_each_feedback_kind_is_recorded_as_its_link_says(site: Site) -> None:
    user = user_of(site)
    links = email_links(sent_digest(site, user))

    for name in ("like", "dislike", "low_quality"):
        assert (await site.client.post(links[name])).status_code == 200

    assert sorted(site.feedback_rows(), key=str) == sorted(
        [
            ("2611.00001", "like", None),
            ("2611.00001", "dislike", None),
            ("2611.00001", "dislike", "low quality"),
        ],
        key=str,
    )


async def test_a_replayed_feedback_link_changes_nothing(site: Site) -> None:
    links = email_links(sent_digest(site, user_of(site)))
    await site.client.post(links["like"])

    again = await site.client.post(links["like"])
    page = await site.client.get(links["like"])

    assert again.status_code == 409 and "already used" in again.text
    assert page.status_code == 409
    assert site.feedback_rows() == [("2611.00001", "like", None)]


async def test_a_tampered_feedback_link_changes_nothing(site: Site) -> None:
    link = email_links(sent_digest(site, user_of(site)))["like"]
    # Swap the kind inside the payload, keeping the signature: the signature no longer matches.
    tampered = link[:20] + ("A" if link[20] != "A" else "B") + link[21:]

    response = await site.client.post(tampered)

    assert response.status_code == 400 and "not valid" in response.text
    assert "Nothing was changed" in response.text
    assert site.feedback_rows() == []


async def test_an_expired_feedback_link_changes_nothing(site: Site) -> None:
    user = user_of(site)
    with time_machine.travel(NOW, tick=False):
        links = email_links(sent_digest(site, user))

    with time_machine.travel(NOW + timedelta(days=61), tick=False):
        response = await site.client.post(links["like"])

    assert response.status_code == 410 and "expired" in response.text
    assert site.feedback_rows() == []


async def test_a_link_used_on_the_wrong_page_changes_nothing(site: Site) -> None:
    user = user_of(site)
    links = email_links(sent_digest(site, user))
    manage_token = links["manage"].removeprefix("/manage/")
    feedback_token = links["like"].removeprefix("/feedback/")

    as_unsubscribe = await site.client.post(f"/unsubscribe/{manage_token}")
    as_feedback = await site.client.post(f"/feedback/{manage_token}")
    as_manage = await site.client.post(f"/manage/{feedback_token}", data={"interests": "x"})

    for response in (as_unsubscribe, as_feedback, as_manage):
        assert response.status_code == 400 and "not meant for this page" in response.text
    assert site.subscription(user).status == "active" and site.feedback_rows() == []
    assert site.store.get_user(user.id).interests[0].name == "LLM tuning"  # type: ignore[union-attr]


# Unsubscribe (RFC 8058)


async def test_get_on_the_unsubscribe_link_only_asks_and_the_post_unsubscribes(site: Site) -> None:
    user = user_of(site)
    link = email_links(sent_digest(site, user))["unsubscribe"]

    page = await site.client.get(link)
    assert page.status_code == 200 and "<form" in page.text and 'method="post"' in page.text
    assert site.subscription(user).status == "active"

    # What a mail provider sends for one-click unsubscribe.
    response = await site.client.post(
        link,
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200 and "You are unsubscribed" in response.text
    assert site.subscription(user).status == "unsubscribed"
    scheduler = site.app.state.scheduler  # type: ignore[attr-defined]
    await scheduler.tick(NOW + timedelta(days=2))
    assert [r.digest_key for r in site.store.deliveries(user.id)] == [f"{user.id}/2026-11-24"]
    assert (await site.client.post(link)).status_code == 409  # replayed: nothing more


# Manage


async def test_the_manage_page_shows_the_schedule_and_every_delivery(site: Site) -> None:
    user = user_of(site, timezone="Asia/Tokyo", send_hour=9)
    digest = sent_digest(site, user)
    site.store.record_skipped(
        f"{user.id}/2026-11-23",
        user.id,
        "arXiv announces no new papers on weekends",
        NOW - timedelta(days=1),
    )

    page = (await site.client.get(email_links(digest)["manage"])).text

    assert "ada@example.org" in page and "<option selected>Asia/Tokyo</option>" in page
    assert "LoRA &lt;b&gt;revisited&lt;/b&gt;" in page  # the sent digest's papers
    assert "skipped: arXiv announces no new papers on weekends" in page


async def test_saving_the_manage_form_pauses_and_changes_interests(site: Site) -> None:
    user = user_of(site)
    manage = email_links(sent_digest(site, user))["manage"]

    response = await site.client.post(
        manage,
        data={
            "interests": "LLM tuning: lora adapters\n<script>alert(1)</script> agents",
            "frequency": "daily",
            "weekday": "0",
            "send_hour": "7",
            "timezone": "America/New_York",
            "max_papers": "3",
            "paused": "on",
        },
    )

    assert response.status_code == 303
    page = await site.client.get(response.headers["location"])
    assert "Your changes are saved." in page.text and "Status: <strong>paused</strong>" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; agents" in page.text
    schedule = site.subscription(user).schedule
    assert schedule.paused and schedule.timezone == "America/New_York"
    saved = site.store.get_user(user.id)
    assert saved is not None and saved.max_papers == 3 and len(saved.interests) == 2


async def test_delete_my_data_needs_confirming_and_then_removes_everything(site: Site) -> None:
    user = user_of(site)
    links = email_links(sent_digest(site, user))
    delete = links["manage"] + "/delete"

    assert (await site.client.post(delete)).status_code == 422
    assert site.store.get_user(user.id) is not None

    gone = await site.client.post(delete, data={"confirm": "on"})

    assert gone.status_code == 200 and "Your data is deleted" in gone.text
    assert site.store.get_user(user.id) is None and site.store.deliveries(user.id) == []
    assert (await site.client.get(links["manage"])).status_code == 404
    assert (await site.client.post(links["like"])).status_code == 404


# Feeds


async def test_personal_feeds_list_the_papers_of_the_users_digests(site: Site) -> None:
    user = user_of(site)
    sent_digest(site, user)
    token = site.signer.sign("feed", user.id, token_id("feed", user.id))

    atom = await site.client.get(f"/feeds/{token}/atom.xml")
    rss = await site.client.get(f"/feeds/{token}/rss.xml")
    jsonfeed = await site.client.get(f"/feeds/{token}/feed.json")

    ns = {"a": "http://www.w3.org/2005/Atom"}
    entry = ET.fromstring(atom.content).find("a:entry", ns)
    assert atom.headers["content-type"].startswith("application/atom+xml")
    assert entry is not None and entry.findtext("a:title", namespaces=ns) == "LoRA <b>revisited</b>"
    item = ET.fromstring(rss.content).find("channel/item")
    assert item is not None and item.findtext("link") == "https://arxiv.org/abs/2611.00001"
    body = json.loads(jsonfeed.content)
    assert body["version"] == "https://jsonfeed.org/version/1.1"
    assert [i["id"] for i in body["items"]] == ["urn:paperwire:paper:2611.00001"]
    assert (await site.client.get(f"/feeds/{token[:-3]}xyz/atom.xml")).status_code == 400


async def test_a_user_who_gets_no_email_reads_a_feed_ranked_when_read(site: Site) -> None:
    user = site.store.create_user(
        "ada@example.org", "off", 5, [Interest("LLM tuning", "lora adapters")], NOW
    )
    [vector] = HashingEncoder().encode(["lora adapters for language models"])
    payload = {"paper_id": "2611.00009", "title": "lora adapters for language models"}
    assert site.vectors is not None
    site.vectors.upsert(
        [StoredPaper("2611.00009", payload | {"embedded_at": NOW.timestamp()}, vector)]
    )
    token = site.signer.sign("feed", user.id, token_id("feed", user.id))

    body = json.loads((await site.client.get(f"/feeds/{token}/feed.json")).content)

    assert [i["id"] for i in body["items"]] == ["urn:paperwire:paper:2611.00009"]
    assert body["items"][0]["summary"].startswith('matches your interest "LLM tuning"')


# REST


async def test_schedule_and_deliveries_over_rest(site: Site) -> None:
    user = user_of(site)
    sent_digest(site, user)

    put = await site.client.put(
        f"/v1/users/{user.id}/schedule",
        json={"frequency": "weekly", "weekday": 4, "timezone": "Europe/Berlin", "send_hour": 18},
    )
    bad = await site.client.put(f"/v1/users/{user.id}/schedule", json={"timezone": "Nowhere/City"})
    deliveries = (await site.client.get(f"/v1/users/{user.id}/deliveries")).json()

    assert (
        put.status_code == 200 and put.json()["weekday"] == 4 and put.json()["status"] == "active"
    )
    assert (await site.client.get(f"/v1/users/{user.id}/schedule")).json()[
        "timezone"
    ] == "Europe/Berlin"
    assert bad.status_code == 422 and "time zone" in bad.text
    [delivery] = deliveries
    assert delivery["state"] == "sending" and delivery["papers"][0]["paper_id"] == "2611.00001"


def test_interests_round_trip_through_the_form_text_unchanged() -> None:
    from paperwire_recommend.web import interests_text, parse_interests

    stored = [
        Interest("LLM tuning", "low-rank adapters", [], [0.1, 0.2]),
        Interest("splats", None, ["2503.15835", "2501.00003"]),
        Interest("protein folding", "protein folding"),
    ]
    text = interests_text(stored)

    assert text.splitlines() == [
        "LLM tuning: low-rank adapters",
        "splats | seeds: 2503.15835 2501.00003",
        "protein folding",
    ]
    parsed = parse_interests(text, stored)
    assert parsed == stored  # the cached vector is kept, nothing is re-encoded
    changed = parse_interests(text.replace("low-rank adapters", "prefix tuning"), stored)
    assert changed[0].text == "prefix tuning" and changed[0].vector is None


def test_editing_an_interest_on_the_page_keeps_the_rules_set_through_the_api() -> None:
    from paperwire_recommend.web import interests_text, parse_interests

    stored = [
        Interest(
            "LLM tuning",
            "low-rank adapters",
            vector=[0.1, 0.2],
            exclude_keywords=["survey"],
            authors=["Edward J. Hu"],
        )
    ]
    text = interests_text(stored).replace("low-rank adapters", "prefix tuning")
    [edited] = parse_interests(text, stored)
    assert edited.text == "prefix tuning" and edited.vector is None
    assert edited.exclude_keywords == ["survey"] and edited.authors == ["Edward J. Hu"]
