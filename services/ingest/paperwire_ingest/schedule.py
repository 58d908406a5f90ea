"""When each network source runs, and the background task that runs them.

arXiv announces Sunday to Thursday at 20:00 New York time and rebuilds its feeds at midnight, so
the daily arXiv source runs once after each rebuild (Monday to Friday at ``arxiv_poll_time`` New
York time), and at once on start-up when a rebuild passed since its last success. Hugging Face's
listings change all day: that source runs every ``hf_poll_minutes``. A failed run is reported and
tried again after the retry delay; nothing a source does stops the loop or the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from paperwire_ingest.sources.http import SourceError
from paperwire_ingest.state import SourceState, SourceStatus
from paperwire_shared.service import stop_task

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
# A catch-up after a long stop reads at most this many days of HF listings.
HF_MAX_CATCH_UP_DAYS = 31
# The loop wakes at least this often, so a changed clock or a due retry is not missed for long.
_MAX_SLEEP = 300.0


def _slot(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=NEW_YORK).astimezone(UTC)


def last_arxiv_slot(now: datetime, at: time) -> datetime:
    """The latest feed-rebuild slot at or before ``now``: a weekday, ``at`` New York time."""
    today = now.astimezone(NEW_YORK).date()
    for back in range(8):
        day = today - timedelta(days=back)
        if day.weekday() < 5 and _slot(day, at) <= now:
            return _slot(day, at)
    raise AssertionError("a week always has a weekday")


def next_arxiv_slot(now: datetime, at: time) -> datetime:
    """The first slot after ``now``."""
    today = now.astimezone(NEW_YORK).date()
    for ahead in range(8):
        day = today + timedelta(days=ahead)
        if day.weekday() < 5 and _slot(day, at) > now:
            return _slot(day, at)
    raise AssertionError("a week always has a weekday")


def arxiv_due(now: datetime, last_success: datetime | None, at: time) -> datetime:
    """When the daily arXiv run is due: now if a slot passed since its last success."""
    if last_success is None or last_success < last_arxiv_slot(now, at):
        return now
    return next_arxiv_slot(now, at)


def missed_announcements(last: date, day: date) -> bool:
    """Whether an announcement day (a weekday) lies strictly between ``last`` and ``day``: the
    feed only ever shows the latest one, so those must be caught up another way."""
    between = (last + timedelta(days=n) for n in range(1, (day - last).days))
    return any(d.weekday() < 5 for d in between)


def hf_due(now: datetime, last_success: datetime | None, every: timedelta) -> datetime:
    """When the HF run is due: ``every`` after its last success (a time past means now)."""
    return now if last_success is None else last_success + every


def hf_days(now: datetime, cursor: str, window: int) -> list[date]:
    """The HF listing days to read: the last ``window`` days, reaching back to the last day read
    when the service was stopped longer than that (at most ``HF_MAX_CATCH_UP_DAYS``)."""
    today = now.astimezone(UTC).date()
    start = today - timedelta(days=window - 1)
    if cursor:
        start = min(start, date.fromisoformat(cursor))
    start = max(start, today - timedelta(days=HF_MAX_CATCH_UP_DAYS - 1))
    return [start + timedelta(days=n) for n in range((today - start).days + 1)]


@dataclass
class RunReport:
    """What one run of a source did; ``cursor`` is where the next run starts."""

    found: int = 0
    published: int = 0
    cursor: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Job:
    """One source as the poller sees it: how to run it, and when it is next due."""

    name: str
    run: Callable[[SourceStatus, datetime], Awaitable[RunReport]]
    due: Callable[[datetime, datetime | None], datetime]


def _clock() -> datetime:
    return datetime.now(UTC)


class SourcePoller:
    """Runs each job when it is due, one at a time: a background task of the ingest service."""

    def __init__(
        self,
        jobs: Sequence[Job],
        state: SourceState,
        *,
        retry: timedelta,
        clock: Callable[[], datetime] = _clock,
        on_run: Callable[[str, SourceStatus], None] | None = None,
    ) -> None:
        self.jobs = list(jobs)
        self._state = state
        self._retry = retry
        self._clock = clock
        self._on_run = on_run
        self._task: asyncio.Task[None] | None = None

    async def _due(self, job: Job) -> tuple[datetime, SourceStatus]:
        status = await self._state.status(job.name)
        now = self._clock()
        if status.failures and status.last_run is not None:
            return status.last_run + self._retry, status
        return job.due(now, status.last_success), status

    async def run_due(self) -> datetime:
        """Run every job that is due now; returns when the next one is due."""
        next_due = self._clock() + timedelta(seconds=_MAX_SLEEP)
        for job in self.jobs:
            due, status = await self._due(job)
            if due <= self._clock():
                status = await self.run_job(job, status)
                due = status.next_run or due
            next_due = min(next_due, due)
        return next_due

    async def run_job(self, job: Job, status: SourceStatus) -> SourceStatus:
        """Run ``job`` once and record how it went; never raises for the source's failures."""
        now = self._clock()
        status = status.model_copy(update={"enabled": True, "last_run": now})
        try:
            report = await job.run(status, now)
        except Exception as exc:
            if isinstance(exc, SourceError):
                log.warning("source %s failed: %s; trying again in %s", job.name, exc, self._retry)
            else:  # a bug or an unexpected answer: keep the trace, keep the service
                log.exception("source %s failed unexpectedly", job.name)
            status.failures += 1
            status.last_error = f"{type(exc).__name__}: {exc}"[:500]
            status.next_run = self._clock() + self._retry
        else:
            status.failures = 0
            status.last_error = ""
            status.last_success = now
            status.found, status.published = report.found, report.published
            status.published_total += report.published
            status.detail = report.detail
            status.cursor = report.cursor or status.cursor
            status.next_run = job.due(self._clock(), now)
            log.info(
                "source %s: %d papers found, %d published%s",
                job.name,
                report.found,
                report.published,
                f" ({report.detail})" if report.detail else "",
            )
        await self._state.save_status(status)
        if self._on_run is not None:
            self._on_run(job.name, status)
        return status

    async def announce(self) -> None:
        """Record which sources run and when next, for ``paperwire sources``; a source no longer
        configured keeps its history but is shown as disabled."""
        names = {job.name for job in self.jobs}
        for status in await self._state.statuses():
            if status.name not in names and status.enabled:
                await self._state.save_status(
                    status.model_copy(update={"enabled": False, "next_run": None})
                )
        for job in self.jobs:
            due, status = await self._due(job)
            await self._state.save_status(
                status.model_copy(update={"enabled": True, "next_run": due})
            )

    async def run(self) -> None:
        """Run jobs as they fall due until cancelled."""
        while True:
            try:
                next_due = await self.run_due()
            except Exception:  # Redis down, most likely: try again shortly
                log.exception("source poller: a round failed")
                next_due = self._clock() + timedelta(seconds=60)
            wait = (next_due - self._clock()).total_seconds()
            await asyncio.sleep(min(max(wait, 0.0), _MAX_SLEEP))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if not self.running:
            try:
                await self.announce()
            except Exception:  # only for `paperwire sources`: the loop retries Redis anyway
                log.warning("source poller: could not record the sources' schedule")
            self._task = asyncio.create_task(self.run(), name="ingest-source-poller")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
