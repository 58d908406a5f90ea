"""Every handler is idempotent: replaying any entry, any number of times, changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_embed.app import create_app
from paperwire_embed.config import Settings
from paperwire_shared import streams
from paperwire_shared.events import PaperIngested
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder

SEEN = datetime(2026, 11, 27, 8, tzinfo=UTC)


def paper(
    *, version: int = 1, popularity: int | None = None, seen: datetime = SEEN
) -> PaperIngested:
    return PaperIngested(
        paper_id="2503.11731",
        source="hf",
        title="Gaussian splats",
        abstract=f"Version {version} of the abstract.",
        published=date(2025, 3, 18),
        version=version,
        popularity=popularity,
        ingested_at=seen,
    )


@pytest.fixture
def embed(tmp_path: Path) -> Iterator[tuple[RedisBroker, HashingEncoder, QdrantEdgeStore]]:
    broker, encoder = RedisBroker(), HashingEncoder()
    store = QdrantEdgeStore(tmp_path / "qdrant")
    create_app(
        Settings(redis_url="redis://unused", data_dir=tmp_path),
        broker=broker,
        encoder=encoder,
        store=store,
        ensure_groups=False,
    )
    yield broker, encoder, store
    store.close()


async def test_paper_event_replayed_three_times_leaves_the_store_as_it_was(embed) -> None:
    broker, encoder, store = embed
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(), stream=streams.PAPERS_INGESTED)
        [first] = store.get(["2503.11731"], with_vectors=True)
        for _ in range(3):
            await br.publish(paper(), stream=streams.PAPERS_INGESTED)
    [after] = store.get(["2503.11731"], with_vectors=True)

    assert after.payload == first.payload  # not even updated_at moved
    assert (after.vector == first.vector).all()
    assert sum(encoder.calls) == 1 and store.count() == 1


async def test_older_version_replayed_late_does_not_undo_the_newer_one(embed) -> None:
    broker, encoder, store = embed
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(version=1), stream=streams.PAPERS_INGESTED)
        await br.publish(paper(version=2), stream=streams.PAPERS_INGESTED)
        await br.publish(paper(version=1), stream=streams.PAPERS_INGESTED)
    [stored] = store.get(["2503.11731"])

    assert stored.payload["version"] == 2
    assert stored.payload["abstract"] == "Version 2 of the abstract."
    assert sum(encoder.calls) == 2


async def test_older_upvotes_replayed_late_do_not_undo_newer_ones(embed) -> None:
    broker, _, store = embed
    later = SEEN + timedelta(hours=1)
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(popularity=3), stream=streams.PAPERS_INGESTED)
        await br.publish(paper(popularity=10, seen=later), stream=streams.PAPERS_INGESTED)
        await br.publish(paper(popularity=3), stream=streams.PAPERS_INGESTED)
    [stored] = store.get(["2503.11731"])

    assert stored.payload["popularity"] == 10


async def test_feedback_replayed_three_times_is_recorded_once(tmp_path: Path) -> None:
    from paperwire_recommend.store import Store, feedback
    from paperwire_shared.events import FeedbackRecorded
    from tests.support.recommend import recommend_app

    broker = RedisBroker()
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    recommend_app(tmp_path, broker=broker, store=store, vectors=vectors)
    event = FeedbackRecorded(
        feedback_id="f-1", user_id="u-1", paper_id="2503.11731", kind="like", recorded_at=SEEN
    )
    try:
        async with TestRedisBroker(broker) as br:
            for _ in range(3):
                await br.publish(event, stream=streams.FEEDBACK_RECORDED)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(feedback)).all()
    finally:
        vectors.close()
        store.close()

    assert [(r.feedback_id, r.kind) for r in rows] == [("f-1", "like")]
