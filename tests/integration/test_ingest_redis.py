"""ingest against real Redis servers (embedded Valkey and Redis 7): seen memory, stream, inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from faststream import TestApp
from faststream.redis import RedisBroker
from faststream.redis.parser.binary import BinaryMessageFormatV1

from paperwire_ingest.app import create_app
from paperwire_ingest.config import Settings
from paperwire_ingest.importing import IngestError, import_file, import_files
from paperwire_ingest.seen import SEEN_KEY, RedisSeenPapers
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import EMBED_GROUP, PAPERS_INGESTED

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def paper(n: int, *, version: int = 1, abstract: str = "An abstract.") -> PaperIngested:
    return PaperIngested(
        paper_id=f"2503.{11700 + n}",
        source="file",
        title=f"Paper {n}",
        abstract=abstract,
        version=version,
        ingested_at=NOW,
    )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def seen(redis_url: str) -> AsyncIterator[RedisSeenPapers]:
    memory = RedisSeenPapers.from_url(redis_url)
    yield memory
    await memory.aclose()


async def published(client: aioredis.Redis) -> list[PaperIngested]:
    """Every event on PAPERS_INGESTED, decoded from FastStream's envelope."""
    entries = await client.xrange(PAPERS_INGESTED)
    bodies = [BinaryMessageFormatV1.parse(fields[b"__data__"])[0] for _, fields in entries]
    return [PaperIngested.model_validate_json(body) for body in bodies]


async def test_redis_seen_claims_each_text_once_and_a_changed_text_again(
    seen: RedisSeenPapers,
) -> None:
    first = await seen.claim([paper(1), paper(2), paper(1)])
    again = await seen.claim([paper(1), paper(2)])
    v2 = await seen.claim([paper(1, version=2, abstract="Revised.")])
    stale_v1 = await seen.claim([paper(1, version=1, abstract="An abstract.")])

    assert [p.paper_id for p in first] == ["2503.11701", "2503.11702"]
    assert again == []
    assert [p.version for p in v2] == [2]
    assert stale_v1 == []


async def test_concurrent_importers_claim_each_paper_exactly_once(redis_url: str) -> None:
    memories = [RedisSeenPapers.from_url(redis_url) for _ in range(4)]
    batch = [paper(n) for n in range(200)]

    results = await asyncio.gather(*(m.claim(batch) for m in memories))
    for memory in memories:
        await memory.aclose()

    claimed = [p.paper_id for result in results for p in result]
    assert sorted(claimed) == sorted(p.paper_id for p in batch)


async def test_forget_undoes_only_a_claim_that_is_still_ours(
    seen: RedisSeenPapers, client: aioredis.Redis
) -> None:
    await seen.claim([paper(1), paper(2)])
    await seen.claim([paper(2, version=2, abstract="Newer, claimed by someone else.")])

    await seen.forget([paper(1), paper(2)])

    assert await client.hkeys(SEEN_KEY) == [b"2503.11702"]
    assert [p.paper_id for p in await seen.claim([paper(1)])] == ["2503.11701"]


async def test_import_file_round_trip_publishes_to_the_stream_once(
    redis_url: str, seen: RedisSeenPapers, client: aioredis.Redis, shared_dir: Path, tmp_path: Path
) -> None:
    source = shared_dir / "data" / "citeulike-a" / "papers.jsonl"
    path = tmp_path / "papers.jsonl"
    with source.open() as f:
        path.write_text("".join(next(f) for _ in range(50)))

    async with RedisBroker(redis_url) as broker:
        first = await import_file(path, broker, seen, now=NOW)
        second = await import_file(path, broker, seen, now=NOW)

    assert (first.published, first.duplicates, first.errors) == (50, 0, [])
    assert (second.published, second.duplicates) == (0, 50)
    events = await published(client)
    # Published several at a time: the stream holds all of them, not necessarily in file order.
    assert sorted(int(e.paper_id) for e in events) == list(range(50))
    assert all(e.ingested_at == NOW and e.source == "file" for e in events)


async def test_import_files_checks_every_file_before_publishing_any(
    redis_url: str, client: aioredis.Redis, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"title": "One"}\n')

    with pytest.raises(IngestError, match="missing.jsonl: no such file"):
        await import_files([good, tmp_path / "missing.jsonl"], redis_url, now=NOW)
    assert await client.exists(PAPERS_INGESTED) == 0

    (report,) = await import_files([good], redis_url, now=NOW)
    assert report.published == 1
    groups = await client.xinfo_groups(PAPERS_INGESTED)
    assert [(g["name"], g["lag"]) for g in groups] == [(EMBED_GROUP.encode(), 1)]


async def wait_until(condition: Callable[[], bool], attempts: int = 1_000) -> None:
    """Wait for a background task's visible effect (at most ~10 s)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background task did not get there")


async def test_inbox_poller_moves_a_dropped_file_to_done_and_publishes_its_papers(
    redis_url: str, client: aioredis.Redis, shared_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, inbox_poll_seconds=0.02)
    app = create_app(settings)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    page = (shared_dir / "seed" / "hf-papers-page.txt").read_bytes()
    (inbox / "hf-papers-page.txt").write_bytes(page)
    (inbox / "broken.jsonl").write_text("not json\n")

    async with TestApp(app):
        await wait_until(lambda: (inbox / "done" / "hf-papers-page.txt").exists())
        await wait_until(lambda: (inbox / "failed" / "broken.jsonl.error.txt").exists())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            readyz = await http.get("/readyz")

    assert readyz.status_code == 200, readyz.text
    events = await published(client)
    assert len(events) == 237
    assert {e.source for e in events} == {"hf-page"}
    # The groups were created at 0 on startup, so embed will read what was published before it.
    groups = await client.xinfo_groups(PAPERS_INGESTED)
    assert [g["name"] for g in groups] == [EMBED_GROUP.encode()]
    assert groups[0]["lag"] == 237
    assert await client.hlen(SEEN_KEY) == 237
    assert "line 1: invalid JSON" in (inbox / "failed" / "broken.jsonl.error.txt").read_text()
