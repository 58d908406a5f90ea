"""What /metrics and `paperwire status` say about the streams, the sources and today's digests.

Against real servers: the stream state comes from Valkey and Redis 7 (XINFO, XPENDING), the
digests from recommend's ledger on SQLite and PostgreSQL, the sources from ingest's own records.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from paperwire import status
from paperwire.cli import main
from paperwire_ingest.app import create_app as ingest_app
from paperwire_ingest.config import Settings as IngestSettings
from paperwire_ingest.state import RedisSourceState, SourceStatus
from paperwire_recommend.store import Store
from paperwire_shared import streams
from paperwire_shared.streamstats import read_stream_stats

NOW = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)


def fill(url: str) -> None:
    """5 papers in, 2 of them read by an embed worker and not acknowledged; 1 dead letter."""
    client = redis.from_url(url)
    for stream, groups in streams.GROUPS.items():
        for group in groups:
            client.xgroup_create(stream, group, id="0", mkstream=True)
    for n in range(5):
        client.xadd(streams.PAPERS_INGESTED, {"n": n})
    client.xreadgroup(streams.EMBED_GROUP, "worker-1", {streams.PAPERS_INGESTED: ">"}, count=2)
    client.xadd(streams.DEAD_LETTERS, {"stream": streams.PAPERS_INGESTED, "error": "bad"})
    client.close()


async def test_stream_stats_give_length_lag_pending_and_last_entry(redis_url: str) -> None:
    fill(redis_url)
    client = aioredis.from_url(redis_url)
    try:
        found = {s.stream: s for s in await read_stream_stats(client)}
    finally:
        await client.aclose()
    ingested = found[streams.PAPERS_INGESTED]
    assert ingested.length == 5
    assert ingested.last_entry_at is not None
    assert abs(ingested.last_entry_at - datetime.now(UTC)) < timedelta(minutes=1)
    (embed,) = ingested.groups
    assert (embed.name, embed.lag, embed.pending, embed.consumers) == ("embed", 3, 2, 1)
    assert embed.oldest_pending_idle is not None and embed.oldest_pending_idle >= 0
    assert found[streams.DEAD_LETTERS].length == 1
    due = found[streams.DIGESTS_DUE]
    assert (due.length, due.last_entry_at) == (0, None)
    assert [(g.name, g.lag, g.pending) for g in due.groups] == [("notify", 0, 0)]
    # Every stream of the topology is there, read or not.
    assert set(found) == {*streams.GROUPS, streams.DEAD_LETTERS}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_service_metrics_show_every_group_backlog_read_at_scrape_time(
    redis_url: str, tmp_path: Path
) -> None:
    fill(redis_url)
    # ingest reads no stream, yet reports embed's backlog: any live service is enough.
    app = ingest_app(IngestSettings(redis_url=redis_url, data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        first = samples((await client.get("/metrics")).text)
        redis.from_url(redis_url).xadd(streams.PAPERS_INGESTED, {"n": 5})
        second = samples((await client.get("/metrics")).text)
    group = (("group", "embed"), ("stream", streams.PAPERS_INGESTED))
    assert first[("paperwire_stream_group_lag", group)] == 3
    assert first[("paperwire_stream_group_pending", group)] == 2
    assert first[("paperwire_stream_group_consumers", group)] == 1
    assert second[("paperwire_stream_group_lag", group)] == 4
    dead = (("stream", streams.DEAD_LETTERS),)
    assert first[("paperwire_stream_length", dead)] == 1
    assert first[("paperwire_stream_stats_up", ())] == 1
    assert first[("paperwire_stream_last_entry_timestamp_seconds", ((group[1]),))] > 0


async def test_metrics_say_redis_is_down_instead_of_failing(tmp_path: Path) -> None:
    app = ingest_app(IngestSettings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert samples(response.text)[("paperwire_stream_stats_up", ())] == 0


def test_digests_today_are_counted_by_state_from_the_ledger(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.record_digest("u1:today", "u1", ["p1"], {}, NOW - timedelta(hours=4))
        store.record_digest("u2:today", "u2", ["p2"], {}, NOW - timedelta(hours=3))
        store.mark_sent("u2:today", "<m2@paperwire>", NOW - timedelta(hours=2))
        store.record_digest("u3:today", "u3", ["p3"], {}, NOW - timedelta(hours=1))
        store.mark_failed("u3:today", "550 no such user", None, None, NOW)
        store.record_skipped("u4:today", "u4", "nothing new", NOW - timedelta(hours=1))
        store.record_digest("u1:yesterday", "u1", ["p0"], {}, NOW - timedelta(days=1))
    finally:
        store.close()
    counts = status.read_digests_today(database_url, NOW)
    assert {state: n for state, n in counts.items() if n} == {
        "due": 1,
        "sent": 1,
        "failed": 1,
        "skipped": 1,
    }


async def test_status_screen_shows_streams_sources_dead_letters_and_digests(
    redis_url: str, tmp_path: Path
) -> None:
    fill(redis_url)
    sources = RedisSourceState.from_url(redis_url)
    try:
        await sources.save_status(
            SourceStatus(
                name="arxiv",
                enabled=True,
                last_run=NOW - timedelta(hours=2),
                last_success=NOW - timedelta(hours=2),
                published=42,
            )
        )
        await sources.save_status(
            SourceStatus(
                name="hf",
                enabled=True,
                last_run=NOW - timedelta(minutes=5),
                last_success=NOW - timedelta(days=2),
                failures=3,
                last_error="HTTP 503",
            )
        )
    finally:
        await sources.aclose()
    database_url = f"sqlite:///{tmp_path / 'paperwire.db'}"
    store = Store(database_url)
    store.record_skipped("u1:today", "u1", "nothing new", NOW)
    store.close()

    found = await status.gather(redis_url, database_url, NOW)
    screen = status.render(found)
    print(screen)
    lines = screen.splitlines()
    ingested = next(line for line in lines if line.startswith(streams.PAPERS_INGESTED))
    assert ingested.split()[1] == "5"
    assert ingested.split()[-5:-1] == ["embed", "3", "2", "1"]
    assert "Dead letters: 1" in screen
    arxiv = next(line for line in lines if line.startswith("arxiv"))
    assert "2026-11-27 08:30 (2h00m ago)" in arxiv and "42" in arxiv and arxiv.endswith("ok")
    hf = next(line for line in lines if line.startswith("hf "))
    assert "failing (3 in a row): HTTP 503" in hf
    assert "Digests today (UTC): due 0  sending 0  sent 0  skipped 1  failed 0" in screen


def test_status_command_prints_the_screen_and_never_the_redis_password(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fill(redis_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    main(["--data-dir", str(tmp_path), "status"])
    out = capsys.readouterr().out
    assert streams.PAPERS_INGESTED in out and "Dead letters: 1" in out
    assert "Digests today (UTC): n/a (no database: set DATABASE_URL)" in out

    # A password in the URL is never shown: not on the screen, not when the server is away.
    scheme, rest = redis_url.split("://", 1)
    monkeypatch.setenv("REDIS_URL", f"{scheme}://:not-the-password@{rest}")
    main(["--data-dir", str(tmp_path), "status"])
    out = capsys.readouterr().out
    assert rest.split("@")[-1].split("/")[0] in out and "not-the-password" not in out
    monkeypatch.setenv("REDIS_URL", "redis://:not-the-password@127.0.0.1:1/0")
    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(tmp_path), "status"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "cannot read the streams at redis://127.0.0.1:1/0" in captured.err
    assert "not-the-password" not in captured.out + captured.err
