"""Network sources against real Redis servers and Qdrant Edge, the network replaced by recordings.

The rate limit shared across processes, a backfill interrupted and resumed from its checkpoint in
Redis, a restart that resumes the schedule, and upvotes reaching the stored paper without the
model running again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from faststream.redis import RedisBroker
from faststream.redis.parser.binary import BinaryMessageFormatV1
from prometheus_client import CollectorRegistry

from paperwire.cli import main
from paperwire_embed.handlers import embed_papers
from paperwire_embed.metrics import Metrics as EmbedMetrics
from paperwire_ingest.commands import backfill_arxiv, source_report
from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import hf_daily, jobs
from paperwire_ingest.schedule import SourcePoller
from paperwire_ingest.seen import POPULARITY_KEY, MemorySeenPapers, RedisSeenPapers
from paperwire_ingest.sources.http import BadResponse, RedisLimiter
from paperwire_ingest.state import RedisSourceState
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder
from tests.fixtures.sources.replay import FakeClock, Replay, replay_sources


async def published(redis_url: str) -> list[PaperIngested]:
    client = aioredis.from_url(redis_url)
    try:
        entries = await client.xrange(PAPERS_INGESTED)
    finally:
        await client.aclose()
    bodies = [BinaryMessageFormatV1.parse(fields[b"__data__"])[0] for _, fields in entries]
    return [PaperIngested.model_validate_json(body) for body in bodies]


def test_two_processes_sharing_the_redis_limit_never_overlap_and_keep_the_gap(
    redis_url: str,
) -> None:
    interval = 0.2
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    limiters = [
        RedisLimiter(c, "paperwire:test:polite", interval, lease_seconds=5) for c in clients
    ]
    turns: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work(limiter: RedisLimiter) -> None:
        for _ in range(3):
            with limiter.turn():
                start = time.monotonic()
                time.sleep(0.01)
                end = time.monotonic()
            with lock:
                turns.append((start, end))

    threads = [threading.Thread(target=work, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()

    turns.sort()
    assert len(turns) == 6
    gaps = [later[0] - earlier[1] for earlier, later in pairwise(turns)]
    # A lower bound, not a speed: the next request never starts inside the gap.
    assert all(gap >= interval * 0.95 for gap in gaps), gaps


def settings_for(redis_url: str, **fields: object) -> Settings:
    return Settings(redis_url=redis_url, **fields)


async def test_a_backfill_interrupted_and_run_again_publishes_the_range_exactly_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(redis_url)
    start, end = date(2026, 11, 2), date(2026, 11, 3)

    async def run(cassette: str) -> object:
        clock = FakeClock()
        sources = replay_sources(settings, Replay(cassette, clock=clock), clock)
        try:
            return await backfill_arxiv(
                settings, ["cs.LG"], start, end, sources=sources, show_progress=False
            )
        finally:
            sources.close()

    with pytest.raises(BadResponse):
        await run("oai-until-page2-truncated")
    halfway = await source_report(redis_url)
    await run("oai-from-page2")

    events = await published(redis_url)
    ids = [e.paper_id for e in events]
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == 8
    assert halfway[-1].startswith(
        "backfill cs.LG:2026-11-02:2026-11-03: 0 of 2 category-days, 3 records"
    )
    monkeypatch.setenv("REDIS_URL", redis_url)
    await asyncio.to_thread(main, ["sources"])  # the CLI runs its own event loop
    printed = capsys.readouterr().out
    assert "no network source has run" in printed
    assert "backfill cs.LG:2026-11-02:2026-11-03: done, 9 records read, 8 papers published" in (
        printed
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_restarted_service_resumes_the_schedule_from_redis(redis_url: str) -> None:
    settings = settings_for(redis_url, sources=["arxiv"], arxiv_categories=["cs.LG", "cs.CL"])
    fake = FakeClock()
    replay = Replay("arxiv-normal-day", clock=fake)
    sources = replay_sources(settings, replay, fake)
    clock = Clock(datetime(2026, 11, 25, 5, 31, tzinfo=UTC))

    async def start_service() -> tuple[SourcePoller, RedisSourceState, RedisSeenPapers]:
        state = RedisSourceState.from_url(redis_url)
        seen = RedisSeenPapers.from_url(redis_url)
        poller = SourcePoller(
            jobs(settings, sources, broker, seen, state),
            state,
            retry=timedelta(minutes=15),
            clock=clock,
        )
        return poller, state, seen

    async with RedisBroker(redis_url) as broker:
        poller, state, seen = await start_service()
        await poller.run_due()
        await state.aclose()
        await seen.aclose()

        # Restarted later the same morning: Wednesday's feed is done, nothing is asked.
        clock.now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
        poller, state, seen = await start_service()
        await poller.run_due()
        asked_after_restart = list(replay.requests)
        # Thursday's rebuild: the run is due again and goes on from Wednesday's cursor.
        replay.load("arxiv-holiday")
        clock.now = datetime(2026, 11, 26, 5, 31, tzinfo=UTC)
        await poller.run_due()
        status = await state.status("arxiv")
        await state.aclose()
        await seen.aclose()
    sources.close()

    assert len(asked_after_restart) == 2  # Wednesday's feed and API call, nothing more
    assert len(replay.requests) == 3
    assert (status.cursor, status.published_total, status.failures) == ("2026-11-26", 5, 0)
    assert len(await published(redis_url)) == 5


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[QdrantEdgeStore]:
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    yield vectors
    vectors.close()


async def test_new_upvotes_reach_the_stored_paper_without_running_the_model_again(
    redis_url: str, store: QdrantEdgeStore
) -> None:
    settings = settings_for(redis_url)
    fake = FakeClock()
    replay = Replay("hf-morning", "hf-evening", clock=fake)
    sources = replay_sources(settings, replay, fake)
    encoder = HashingEncoder()
    metrics = EmbedMetrics(CollectorRegistry())
    seen = RedisSeenPapers.from_url(redis_url)
    day = [date(2026, 11, 25)]
    async with RedisBroker(redis_url) as broker:
        morning = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
        await hf_daily(sources, broker, seen, days=day, now=morning)
        embed_papers(await published(redis_url), encoder, store, metrics)
        first = {p.paper_id: p for p in store.get(["2611.18301"], with_vectors=True)}
        evening = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
        await hf_daily(sources, broker, seen, days=day, now=evening)
        events = await published(redis_url)
        embed_papers(events[2:], encoder, store, metrics)
    await seen.aclose()
    sources.close()

    assert [(e.paper_id, e.popularity) for e in events[2:]] == [("2611.18301", 30)]
    (stored,) = store.get(["2611.18301"], with_vectors=True)
    assert stored.payload["popularity"] == 30
    assert stored.payload["embedded_at"] == first["2611.18301"].payload["embedded_at"]
    assert encoder.calls == [2]  # the second update reused the vector
    client = aioredis.from_url(redis_url)
    assert await client.hget(POPULARITY_KEY, "2611.18301") == b"30"
    await client.aclose()


def event(version: int, abstract: str, popularity: int | None = None) -> PaperIngested:
    return PaperIngested(
        paper_id="2611.18301",
        source="arxiv",
        title="Sparse Mixture-of-Experts Routing",
        abstract=abstract,
        version=version,
        popularity=popularity,
        ingested_at=datetime(2026, 11, 25, tzinfo=UTC),
    )


@pytest.mark.parametrize("memory", ["redis", "in-process"])
async def test_the_seen_memory_publishes_new_versions_and_upvotes_and_keeps_popularity(
    redis_url: str, memory: str
) -> None:
    seen = RedisSeenPapers.from_url(redis_url) if memory == "redis" else MemorySeenPapers()
    rounds = [
        [event(1, "v1")],
        [event(1, "v1", popularity=12)],  # upvotes: same text, published again
        [event(1, "v1", popularity=12)],  # nothing changed
        [event(2, "v1")],  # a new version, same text: the stored version number moves
        [event(3, "v3")],  # a new text
        [event(2, "v1", popularity=40)],  # stale version: dropped, even with new upvotes
    ]
    claimed = [await seen.claim(batch) for batch in rounds]
    if isinstance(seen, RedisSeenPapers):
        await seen.aclose()

    assert [[(p.version, p.abstract, p.popularity) for p in batch] for batch in claimed] == [
        [(1, "v1", None)],
        [(1, "v1", 12)],
        [],
        [(2, "v1", 12)],  # the known upvotes ride along on arXiv's events
        [(3, "v3", 12)],
        [],
    ]
