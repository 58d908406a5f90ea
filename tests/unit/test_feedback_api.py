"""Feedback through the REST API changes the next answer; knobs and rules are part of the profile."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_recommend.store import Store
from paperwire_shared import streams
from paperwire_shared.events import FeedbackRecorded
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder
from tests.support.auth import admin_headers
from tests.support.recommend import asgi_client, recommend_app, stored_papers

NOW = datetime.now(UTC).timestamp()
PAPERS = {
    "p1": ("LoRA low-rank adapters for language models", ["Ada Lovelace"], ["cs.CL"]),
    "p2": ("Prefix tuning adapters for language models", ["Bo"], ["cs.CL"]),
    "p3": ("Quantised adapters for small language models", ["Cy"], ["cs.LG"]),
    "p4": ("Gaussian splatting of dynamic scenes", ["Di"], ["cs.CV"]),
    "p5": ("Gaussian splatting for real-time rendering", ["Ed"], ["cs.CV"]),
    "p6": ("A survey of adapters for language models", ["Fa"], ["cs.CL"]),
}
LLM = {"name": "adapters", "text": "adapters for language models"}


@pytest.fixture
async def api(tmp_path: Path):
    encoder = HashingEncoder()
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    papers = stored_papers({pid: t for pid, (t, _, _) in PAPERS.items()}, encoder, NOW, abstract="")
    for paper in papers:
        _, authors, categories = PAPERS[paper.paper_id]
        paper.payload.update(authors=authors, categories=categories)
    vectors.upsert(papers)
    broker = RedisBroker()
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    app = recommend_app(
        tmp_path, broker=broker, store=store, vectors=vectors, encoder=encoder, min_score=0.05
    )
    published: list[FeedbackRecorded] = []

    @broker.subscriber(stream=streams.FEEDBACK_RECORDED)
    async def collect(event: FeedbackRecorded) -> None:
        published.append(event)

    async with TestRedisBroker(broker), asgi_client(app, headers=admin_headers(tmp_path)) as client:
        client.published = published  # type: ignore[attr-defined]
        yield client
    vectors.close()
    store.close()


async def create(api, interests=None) -> str:
    body = {"email": "ada@example.org", "interests": interests or [LLM]}
    response = await api.post("/v1/users", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def recommended(api, user: str, k: int = 6) -> dict[str, str]:
    response = await api.get(f"/v1/users/{user}/recommendations", params={"k": k})
    assert response.status_code == 200, response.text
    return {item["paper"]["id"]: item["reason"] for item in response.json()}


async def feedback(api, user: str, **body) -> httpx.Response:
    return await api.post(f"/v1/users/{user}/feedback", json=body)


async def test_feedback_is_stored_published_and_listed(api):
    user = await create(api)
    response = await feedback(api, user, paper_id="p2", kind="dislike", reason="off-topic")
    assert response.status_code == 201, response.text
    [event] = api.published
    assert (event.user_id, event.paper_id, event.kind, event.reason) == (
        user,
        "p2",
        "dislike",
        "off-topic",
    )
    listed = (await api.get(f"/v1/users/{user}/feedback")).json()
    assert [(f["paper_id"], f["kind"]) for f in listed] == [("p2", "dislike")]


async def test_the_same_feedback_id_is_recorded_once(api):
    user = await create(api)
    for _ in range(2):
        response = await feedback(api, user, paper_id="p1", kind="save", feedback_id="tap-1")
        assert response.status_code == 201
    assert len((await api.get(f"/v1/users/{user}/feedback")).json()) == 1
    assert len(api.published) == 1


async def test_a_liked_paper_becomes_evidence_and_is_not_recommended_back(api):
    user = await create(api, [{"name": "peft", "text": "parameter-efficient tuning"}])
    assert "p1" in await recommended(api, user)
    assert (await feedback(api, user, paper_id="p1", kind="like")).status_code == 201
    found = await recommended(api, user)
    assert "p1" not in found
    assert any(r.startswith('you liked "LoRA low-rank adapters') for r in found.values())


async def test_a_disliked_paper_is_never_recommended_and_its_topic_goes_down(api):
    user = await create(api, [{"name": "mixed", "text": "splatting scenes and adapters"}])
    before = list(await recommended(api, user))
    await feedback(api, user, paper_id="p4", kind="dislike", reason="off-topic")
    after = list(await recommended(api, user))
    assert "p4" not in after
    # p5, the other splatting paper, falls from second to behind every adapters paper.
    assert before[:2] == ["p4", "p5"]
    assert after[-1] == "p5"


async def test_a_low_quality_dislike_removes_the_paper_but_not_its_topic(api):
    user = await create(api, [{"name": "mixed", "text": "splatting scenes and adapters"}])
    before = list(await recommended(api, user))
    await feedback(api, user, paper_id="p4", kind="dislike", reason="low quality")
    after = list(await recommended(api, user))
    assert set(after) == set(before) - {"p4"}
    assert before[1] == after[0] == "p5"  # the other splatting paper keeps its place


async def test_a_paper_sent_in_a_digest_is_never_recommended_again(api):
    user = await create(api)
    digest = (await api.post(f"/v1/users/{user}/digest")).json()
    sent = {p["paper"]["id"] for p in digest["papers"]}
    assert sent
    assert not sent & set(await recommended(api, user))
    again = (await api.post(f"/v1/users/{user}/digest")).json()
    assert not sent & {p["paper"]["id"] for p in again.get("papers", [])}


async def test_only_a_dislike_takes_a_reason_and_reasons_are_known_ones(api):
    user = await create(api)
    like = await feedback(api, user, paper_id="p1", kind="like", reason="off-topic")
    odd = await feedback(api, user, paper_id="p1", kind="dislike", reason="boring")
    assert like.status_code == odd.status_code == 422
    missing = await api.post("/v1/users/nobody/feedback", json={"paper_id": "p1", "kind": "like"})
    assert missing.status_code == 404


async def test_interest_rules_filter_and_boost_and_are_kept(api):
    rules = {
        "exclude_keywords": ["survey"],
        "include_categories": ["cs.CL"],
        "authors": ["Ada Lovelace"],
    }
    user = await create(api, [{**LLM, **rules}])
    stored = (await api.get(f"/v1/users/{user}")).json()["interests"][0]
    assert {k: stored[k] for k in rules} == rules
    found = await recommended(api, user)
    assert set(found) == {"p1", "p2"}
    assert found["p1"].endswith("by Ada Lovelace, whom you follow")


async def test_ranking_knobs_have_defaults_and_can_be_changed(api):
    user = await create(api)
    defaults = (await api.get(f"/v1/users/{user}/ranking")).json()
    assert set(defaults) == {"recency", "popularity", "diversity"}
    changed = {"recency": 0.0, "popularity": 0.5, "diversity": 0.3}
    assert (await api.put(f"/v1/users/{user}/ranking", json=changed)).status_code == 200
    assert (await api.get(f"/v1/users/{user}/ranking")).json() == changed
    assert (await api.put(f"/v1/users/{user}/ranking", json={"recency": -1})).status_code == 422
    assert await recommended(api, user)
