"""recommend's REST API and scheduler, with the hashing stand-in encoder and real Edge + SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_recommend.store import Store
from paperwire_shared import streams
from paperwire_shared.events import DigestDue, FeedbackRecorded
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder
from tests.support.auth import admin_headers
from tests.support.recommend import asgi_client, recommend_app, stored_papers

NOW = datetime.now(UTC)
PAPERS = {
    "2501.00001": "LoRA: low-rank adapters for fine-tuning large language models",
    "2501.00002": "Adapters and prefix tuning: parameter-efficient fine-tuning of language models",
    "2501.00003": "Gaussian splatting for real-time 3D scene rendering",
    "2501.00004": "Dynamic Gaussian splatting of 3D scenes from video",
    "2501.00005": "A survey of protein folding with diffusion models",
}
LLM = {"name": "efficient LLM tuning", "text": "low-rank adapters fine-tuning language models"}
SPLAT = {"name": "3D", "text": "Gaussian splatting 3D scenes"}


@pytest.fixture
async def api(tmp_path: Path):
    encoder = HashingEncoder()
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    vectors.upsert(
        stored_papers(PAPERS, encoder, NOW.timestamp(), abstract="", authors=["A. Author"])
    )
    broker = RedisBroker()
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    app = recommend_app(
        tmp_path, broker=broker, store=store, vectors=vectors, encoder=encoder, min_score=0.1
    )
    due: list[DigestDue] = []

    @broker.subscriber(stream=streams.DIGESTS_DUE)
    async def collect(event: DigestDue) -> None:
        due.append(event)

    async with TestRedisBroker(broker), asgi_client(app, headers=admin_headers(tmp_path)) as client:
        client.due = due  # type: ignore[attr-defined]
        client.app = app  # type: ignore[attr-defined]
        yield client
    vectors.close()
    store.close()


async def create(api, **fields) -> dict:
    body = {"email": "ada@example.org", "interests": [LLM], **fields}
    response = await api.post("/v1/users", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_user_is_created_read_updated_and_deleted(api):
    user = await create(api)
    assert (await api.get(f"/v1/users/{user['id']}")).json()["email"] == "ada@example.org"
    patched = await api.patch(f"/v1/users/{user['id']}", json={"frequency": "weekly"})
    assert patched.json()["frequency"] == "weekly"
    assert (await api.get("/v1/users", params={"email": "ada@example.org"})).json()[0][
        "id"
    ] == user["id"]
    assert (await api.delete(f"/v1/users/{user['id']}")).status_code == 204
    assert (await api.get(f"/v1/users/{user['id']}")).status_code == 404


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"email": "not-an-email", "interests": [LLM]}, "email"),
        ({"email": "a@b.org", "interests": []}, "interests"),
        ({"email": "a@b.org", "interests": [{"name": "empty"}]}, "needs a text"),
        ({"email": "a@b.org", "interests": [LLM], "frequency": "hourly"}, "frequency"),
        ({"email": "a@b.org", "interests": [LLM], "admin": True}, "admin"),
    ],
)
async def test_invalid_user_is_refused_with_the_reason(api, body, reason):
    response = await api.post("/v1/users", json=body)
    assert response.status_code == 422
    assert reason in response.text


async def test_a_second_user_with_the_same_email_is_a_conflict(api):
    await create(api)
    assert (
        await api.post("/v1/users", json={"email": "ada@example.org", "interests": [LLM]})
    ).status_code == 409


async def test_recommendations_cover_each_interest_with_its_reason(api):
    user = await create(api, interests=[LLM, SPLAT])
    found = (await api.get(f"/v1/users/{user['id']}/recommendations", params={"k": 4})).json()
    top = {item["paper"]["id"]: item["reason"] for item in found}
    assert set(top) == {"2501.00001", "2501.00002", "2501.00003", "2501.00004"}
    assert top["2501.00003"].startswith('matches your interest "3D" (')


async def test_a_seed_paper_is_evidence_and_never_recommended_back(api):
    user = await create(api, interests=[{"name": "splats", "seed_paper_ids": ["2501.00003"]}])
    found = (await api.get(f"/v1/users/{user['id']}/recommendations", params={"k": 1})).json()
    assert found[0]["paper"]["id"] == "2501.00004"
    assert "Gaussian splatting for real-time" in found[0]["reason"]


async def test_digest_goes_to_notify_once_and_its_papers_are_never_sent_again(api):
    user = await create(api, max_papers=2)
    first = (await api.post(f"/v1/users/{user['id']}/digest")).json()
    assert first["state"] == "due"
    assert [p["paper"]["id"] for p in first["papers"]] == ["2501.00001", "2501.00002"]
    [event] = api.due
    assert event.user_id == user["id"] and event.email == "ada@example.org"
    assert all(p.reason for p in event.papers)
    second = (await api.post(f"/v1/users/{user['id']}/digest")).json()
    assert second["state"] == "skipped"
    assert len(api.due) == 1


async def test_disliked_paper_is_not_recommended_again(api):
    user = await create(api)
    feedback = FeedbackRecorded(
        feedback_id="f1", user_id=user["id"], paper_id="2501.00001", kind="dislike", recorded_at=NOW
    )
    await api.app.state.broker.publish(feedback, stream=streams.FEEDBACK_RECORDED)
    found = (await api.get(f"/v1/users/{user['id']}/recommendations", params={"k": 5})).json()
    assert "2501.00001" not in {item["paper"]["id"] for item in found}


async def test_scheduler_sends_one_digest_per_day_however_often_it_ticks(api):
    monday = datetime(2026, 11, 23, 5, tzinfo=UTC)  # an arXiv announcement day
    with time_machine.travel(monday, tick=False):
        await create(api)
    scheduler = api.app.state.scheduler
    morning = monday.replace(hour=7)
    await scheduler.tick(morning)
    await scheduler.tick(morning + timedelta(minutes=1))
    assert len(api.due) == 1


async def test_papers_are_found_by_meaning_by_similarity_and_by_id(api):
    search = (await api.get("/v1/papers/search", params={"q": "gaussian splatting", "k": 2})).json()
    assert {item["paper"]["id"] for item in search} == {"2501.00003", "2501.00004"}
    similar = (await api.get("/v1/papers/2501.00003/similar", params={"k": 1})).json()
    assert similar[0]["paper"]["id"] == "2501.00004"
    paper = (await api.get("/v1/papers/2501.00005")).json()
    assert paper["title"].startswith("A survey of protein folding")
    assert (await api.get("/v1/papers/9999.99999")).status_code == 404
    assert (await api.get("/v1/papers/search", params={"q": ""})).status_code == 422
