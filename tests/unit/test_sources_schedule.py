"""When sources run, how a failing source is reported and retried, and that it never stops ingest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import httpx
from faststream import TestApp
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_ingest.app import create_app
from paperwire_ingest.commands import describe_source
from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import jobs
from paperwire_ingest.schedule import (
    SourcePoller,
    arxiv_due,
    hf_days,
    last_arxiv_slot,
    missed_announcements,
    next_arxiv_slot,
)
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_ingest.state import MemorySourceState
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED
from tests.fixtures.sources.replay import FakeClock, Replay, replay_sources

AT = time(0, 30)  # New York time


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_daily_arxiv_run_follows_the_feed_rebuilds_on_weekdays_new_york_time() -> None:
    wednesday = utc(2026, 11, 25, 5, 31)  # 00:31 in New York (EST, UTC-5)

    assert last_arxiv_slot(wednesday, AT) == utc(2026, 11, 25, 5, 30)
    assert next_arxiv_slot(wednesday, AT) == utc(2026, 11, 26, 5, 30)
    # Friday after the rebuild: the next one is Monday's.
    assert next_arxiv_slot(utc(2026, 11, 27, 12, 0), AT) == utc(2026, 11, 30, 5, 30)
    # Summer time moves the slot by an hour in UTC.
    assert last_arxiv_slot(utc(2026, 7, 1, 12, 0), AT) == utc(2026, 7, 1, 4, 30)


def test_a_restart_runs_arxiv_at_once_only_if_a_rebuild_passed_since_its_last_success() -> None:
    now = utc(2026, 11, 25, 9, 0)

    assert arxiv_due(now, None, AT) == now
    assert arxiv_due(now, utc(2026, 11, 24, 5, 31), AT) == now  # missed Wednesday's
    assert arxiv_due(now, utc(2026, 11, 25, 5, 31), AT) == utc(2026, 11, 26, 5, 30)


def test_missed_announcements_are_weekdays_strictly_between_two_feeds() -> None:
    assert not missed_announcements(date(2026, 11, 20), date(2026, 11, 23))  # Fri -> Mon
    assert missed_announcements(date(2026, 11, 23), date(2026, 11, 25))  # Mon -> Wed


def test_hf_reads_the_recent_days_and_reaches_back_to_where_it_stopped() -> None:
    now = utc(2026, 11, 25, 12, 0)

    assert hf_days(now, "", 3) == [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)]
    assert hf_days(now, "2026-11-20", 3)[0] == date(2026, 11, 20)
    assert len(hf_days(now, "2026-01-01", 3)) == 31


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_source_that_is_down_is_reported_retried_later_and_then_catches_up() -> None:
    broker = RedisBroker()
    papers: list[PaperIngested] = []

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        papers.append(paper)

    settings = Settings(
        redis_url="redis://unused", sources=["arxiv"], arxiv_categories=["cs.LG", "cs.CL"]
    )
    fake = FakeClock()
    replay = Replay("arxiv-api-down", clock=fake)
    sources = replay_sources(settings, replay, fake)
    state = MemorySourceState()
    clock = Clock(utc(2026, 11, 25, 5, 31))
    async with TestRedisBroker(broker) as test_broker:
        poller = SourcePoller(
            jobs(settings, sources, test_broker, MemorySeenPapers(), state),
            state,
            retry=timedelta(minutes=15),
            clock=clock,
        )
        await poller.run_due()
        down = await state.status("arxiv")

        clock.now += timedelta(minutes=10)
        await poller.run_due()  # not due yet: asks nothing
        asked_while_waiting = len(replay.requests)

        replay.load("arxiv-normal-day")
        clock.now += timedelta(minutes=5)
        await poller.run_due()
        recovered = await state.status("arxiv")
    sources.close()

    assert (down.failures, down.last_success, down.enabled) == (1, None, True)
    assert "HTTP 503 after 4 tries" in down.last_error
    assert down.next_run == utc(2026, 11, 25, 5, 46)
    assert asked_while_waiting == 5
    assert (recovered.failures, recovered.last_error, recovered.cursor) == (0, "", "2026-11-25")
    assert (recovered.found, recovered.published) == (5, 5)
    assert recovered.next_run == utc(2026, 11, 26, 5, 30)
    assert len(papers) == 5
    lines = describe_source(down)
    assert lines[0] == "arxiv: failing"
    assert any("HTTP 503" in line for line in lines)


async def wait_until(condition: Callable[[], bool], attempts: int = 500) -> None:
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background task did not get there")


async def test_the_service_stays_ready_while_a_source_is_down(tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://unused",
        data_dir=tmp_path,
        sources=["arxiv"],
        arxiv_categories=["cs.LG", "cs.CL"],
    )
    fake = FakeClock()
    sources = replay_sources(settings, Replay("arxiv-api-down", clock=fake), fake)
    state = MemorySourceState()
    app = create_app(
        settings,
        broker=RedisBroker(),
        seen=MemorySeenPapers(),
        ensure_groups=False,
        sources=sources,
        source_state=state,
    )
    async with TestRedisBroker(app.broker), TestApp(app):  # type: ignore[arg-type]
        await wait_until(lambda: '"failures":1' in state.sources.get("arxiv", ""))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            ready = await http.get("/readyz")
            metrics = (await http.get("/metrics")).text
    sources.close()

    assert ready.status_code == 200, ready.text
    assert 'paperwire_ingest_source_runs_total{outcome="failed",source="arxiv"} 1.0' in metrics
