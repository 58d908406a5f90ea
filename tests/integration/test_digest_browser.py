"""The digest as a person meets it: a real email from notify, its links opened in Chromium.

recommend is served over HTTP (uvicorn), notify sends to the SMTP sink, and the streams between
them run in memory (TestRedisBroker). Chromium is Debian's package driven by Playwright, never a
downloaded browser; CI installs it (.ci/run).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from faststream import TestApp
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire.stack import free_port, read_outbox, smtp_sink_url, start_smtp_sink
from paperwire_notify.app import create_app as notify_app
from paperwire_notify.config import Settings as NotifySettings
from paperwire_recommend.digest import Schedule
from paperwire_recommend.scheduler import Scheduler
from paperwire_recommend.store import Interest, Store, Subscription, User, feedback
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder
from tests.support.recommend import recommend_app, served, stored_papers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "b" * 8 + "0123456789abcdefghijklmnopqrstuvwxyzABCD"
PAPERS = {
    "2611.00001": "LoRA: low-rank adapters for fine-tuning language models",
    "2611.00002": "Adapters and prefix tuning of large language models",
}

# Skipped on a machine without it; in CI (CI=true) a missing chromium fails the test instead.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)",
)


@dataclass
class Stack:
    base: str
    store: Store
    scheduler: Scheduler
    outbox: Path
    browser: object

    def feedback_rows(self) -> list[tuple[str, str, str | None]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(feedback.c.paper_id, feedback.c.kind, feedback.c.reason))
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def subscription(self, user: User) -> Subscription:
        return self.store.get_subscription(user, Schedule())

    async def digest_email(self, user: User) -> EmailMessage:
        now = datetime.now(UTC)
        await self.scheduler.send(user, f"{user.id}/{now:%Y-%m-%d}", now)
        [kept] = read_outbox(self.outbox)
        return kept.message


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    from playwright.async_api import async_playwright

    encoder = HashingEncoder()
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    now = datetime.now(UTC).timestamp()
    abstract = "We adapt language models cheaply."
    vectors.upsert(stored_papers(PAPERS, encoder, now, abstract=abstract, authors=["Ada Lovelace"]))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "outbox"
    sink = start_smtp_sink(outbox)
    broker = RedisBroker()
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    recommend = recommend_app(
        tmp_path,
        broker=broker,
        store=store,
        vectors=vectors,
        encoder=encoder,
        secret_key=SECRET,
        min_score=0.1,
    )
    notify = notify_app(
        NotifySettings(
            redis_url="redis://unused",
            smtp_url=smtp_sink_url(sink),
            data_dir=tmp_path,
            secret_key=SECRET,
            public_url=base,
            send_retry_delays=(),
        ),
        broker=broker,
        ensure_groups=False,
    )
    try:
        async with (
            TestRedisBroker(broker),
            TestApp(notify),
            served(recommend, port, log_level="warning"),
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            try:
                yield Stack(base, store, recommend.state.scheduler, outbox, browser)
            finally:
                await browser.close()
    finally:
        sink.stop()
        vectors.close()


def links_of(email: EmailMessage) -> dict[str, str]:
    html = email.get_body(("html",)).get_content()  # type: ignore[union-attr]
    like = re.search(r'<a href="([^"]+/feedback/[^"]+)"[^>]*>👍 More like this', html)
    off_topic = re.search(r'<a href="([^"]+/feedback/[^"]+)"[^>]*>off-topic', html)
    manage = re.search(r'<a href="([^"]+/manage/[^"]+)"', html)
    assert like and off_topic and manage
    return {
        "like": like.group(1),
        "off_topic": off_topic.group(1),
        "manage": manage.group(1),
        "unsubscribe": email["List-Unsubscribe"].strip("<>"),
    }


def subscriber(stack: Stack) -> User:
    interests = [Interest("LLM tuning", "low-rank adapters fine-tuning language models")]
    return stack.store.create_user("ada@example.org", "daily", 2, interests, datetime.now(UTC))


async def test_a_click_on_a_feedback_link_in_a_sent_email_records_it(stack: Stack) -> None:
    user = subscriber(stack)
    links = links_of(await stack.digest_email(user))
    assert links["like"].startswith(stack.base)

    page = await stack.browser.new_page()  # type: ignore[attr-defined]
    await page.goto(links["like"])
    await page.get_by_role("heading", name="Thank you").wait_for()

    assert "Noted: you like" in await page.inner_text("main")
    [(paper_id, kind, reason)] = stack.feedback_rows()
    assert (kind, reason) == ("like", None) and paper_id in PAPERS

    await page.goto(links["like"])  # the same link again
    assert "already used" in await page.inner_text("main")
    assert len(stack.feedback_rows()) == 1


async def test_unsubscribing_from_the_email_takes_a_click_on_the_confirmation_page(
    stack: Stack,
) -> None:
    user = subscriber(stack)
    links = links_of(await stack.digest_email(user))
    page = await stack.browser.new_page()  # type: ignore[attr-defined]

    await page.goto(links["unsubscribe"])  # what a mail scanner's fetch also does
    assert stack.subscription(user).status == "active"

    await page.get_by_role("button", name="Unsubscribe").click()
    await page.get_by_role("heading", name="You are unsubscribed").wait_for()

    assert stack.subscription(user).status == "unsubscribed"


async def test_the_manage_page_pauses_digests_with_labelled_controls(stack: Stack) -> None:
    user = subscriber(stack)
    links = links_of(await stack.digest_email(user))
    page = await stack.browser.new_page()  # type: ignore[attr-defined]

    await page.goto(links["manage"])
    await page.get_by_label("Time zone").select_option("Europe/Paris")
    await page.get_by_label("Pause my digests").check()
    await page.get_by_role("button", name="Save").click()
    await page.get_by_role("status").wait_for()

    assert "Your changes are saved." in await page.get_by_role("status").inner_text()
    schedule = stack.subscription(user).schedule
    assert schedule.paused and schedule.timezone == "Europe/Paris"
    # notify's DigestSent report reached the delivery log.
    assert await page.locator("tbody td:nth-child(2)").all_inner_texts() == ["sent"]
