"""Runs of the network sources: what each finds is claimed in the seen memory and published.

- ``arxiv_daily``: the latest announcement (feed, then API metadata), after an OAI-PMH catch-up
  of the days missed while the service was stopped;
- ``hf_daily``: the daily papers of recent days, as arXiv papers with their upvotes as popularity;
- ``backfill``: an OAI-PMH harvest of a date range, checkpointed after every page, so a run
  interrupted and started again neither misses nor repeats a paper.

Every source gives arXiv ids, so a paper found by several sources, cross-listed or announced again
as a new version is one paper; the seen memory decides what is new. Fetching runs in worker
threads (the HTTP libraries are sync), publishing on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import httpx2
import redis
from faststream.redis import RedisBroker

from paperwire_ingest.config import Settings
from paperwire_ingest.importing import publish_unseen
from paperwire_ingest.schedule import (
    Job,
    RunReport,
    arxiv_due,
    hf_days,
    hf_due,
    missed_announcements,
)
from paperwire_ingest.seen import SeenPapers
from paperwire_ingest.sources import arxiv, hf
from paperwire_ingest.sources.http import (
    BadResponse,
    Limiter,
    LocalLimiter,
    PoliteTransport,
    RedisLimiter,
    polite_client,
)
from paperwire_ingest.sources.oai import ExpiredToken, OaiHarvester, ScytheHarvester, set_spec
from paperwire_ingest.state import Checkpoint, SourceState, SourceStatus

log = logging.getLogger(__name__)

# One key for every process that talks to arXiv: the service and a backfill from the CLI.
ARXIV_LIMIT_KEY = "paperwire:ingest:polite:arxiv"
# Hugging Face publishes no rate for its API; one request a second is far inside its limits.
HF_INTERVAL_SECONDS = 1.0

Progress = Callable[[Checkpoint], None]


@dataclass
class Sources:
    """The adapters the runs use; ``close`` releases what ``open_sources`` opened."""

    feed: arxiv.ArxivFeed
    metadata: arxiv.ArxivMetadata
    oai: OaiHarvester
    daily_papers: hf.DailyPapers
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()


def open_sources(
    settings: Settings,
    *,
    inner: httpx2.BaseTransport | None = None,
    arxiv_limiter: Limiter | None = None,
    hf_limiter: Limiter | None = None,
) -> Sources:
    """The real adapters over one polite client; ``inner`` replaces the network (recorded
    answers in tests), ``arxiv_limiter`` the Redis one shared with other processes."""
    closers: list[Callable[[], None]] = []
    if arxiv_limiter is None:
        client = redis.Redis.from_url(settings.redis_url)
        closers.append(client.close)
        arxiv_limiter = RedisLimiter(
            client,
            ARXIV_LIMIT_KEY,
            settings.arxiv_interval_seconds,
            lease_seconds=settings.http_timeout_seconds,
        )
    limiters: dict[str, Limiter] = dict.fromkeys(settings.arxiv_hosts, arxiv_limiter)
    limiters[urlsplit(settings.hf_api_url).hostname or ""] = hf_limiter or LocalLimiter(
        HF_INTERVAL_SECONDS
    )
    transport = PoliteTransport(
        limiters,
        user_agent=settings.user_agent,
        max_bytes=settings.http_max_bytes,
        deadline_seconds=settings.http_timeout_seconds,
        inner=inner,
    )
    http = polite_client(transport, timeout=settings.http_timeout_seconds)
    closers.insert(0, http.close)
    return Sources(
        feed=arxiv.HttpArxivFeed(http, settings.arxiv_rss_url),
        metadata=arxiv.HttpArxivMetadata(http, settings.arxiv_api_url),
        oai=ScytheHarvester(http, settings.arxiv_oai_url),
        daily_papers=hf.HttpDailyPapers(http, settings.hf_api_url),
        closers=closers,
    )


def backfill_job(categories: Sequence[str], start: date, end: date) -> str:
    return f"{','.join(sorted(categories))}:{start.isoformat()}:{end.isoformat()}"


async def backfill(
    oai: OaiHarvester,
    broker: RedisBroker,
    seen: SeenPapers,
    state: SourceState,
    *,
    categories: Sequence[str],
    start: date,
    end: date,
    now: datetime,
    job: str | None = None,
    progress: Progress | None = None,
) -> Checkpoint:
    """Harvest the records of ``categories`` changed from ``start`` to ``end`` (inclusive).

    Work goes set by set, day by day, page by page; after each page is published the checkpoint
    moves past it. Started again, the same job goes on from its checkpoint: a page is fetched
    again only if it was interrupted before its checkpoint, and the seen memory drops what that
    page had already published. An expired resumption token restarts its day the same way.
    """
    sets = sorted({set_spec(category) for category in categories})
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    units = [(spec, day) for spec in sets for day in days]
    job = job or backfill_job(categories, start, end)
    checkpoint = await state.checkpoint(job) or Checkpoint(job=job, units=len(units))
    wanted = set(categories)
    while checkpoint.unit < len(units):
        spec, day = units[checkpoint.unit]
        token = checkpoint.token or None
        try:
            page = await asyncio.to_thread(oai.page, spec, day, token, now=now)
        except ExpiredToken:
            if token is None:
                raise BadResponse(f"OAI-PMH: {spec} {day}: token refused without one") from None
            log.warning("backfill %s: resumption token expired; %s %s starts again", job, spec, day)
            checkpoint.token = ""
            continue
        if token is not None and page.token == token:
            raise BadResponse(f"OAI-PMH: {spec} {day} gave the same resumption token again")
        # A set may hold records of other categories (cross-lists); keep those asked for.
        papers = [p for p in page.papers if wanted.intersection(p.categories)]
        fresh = await publish_unseen(broker, seen, papers)
        checkpoint.records += page.records
        checkpoint.published += len(fresh)
        if page.token:
            checkpoint.token = page.token
        else:
            checkpoint.unit += 1
            checkpoint.token = ""
        checkpoint.updated_at = datetime.now(UTC)
        await state.save_checkpoint(checkpoint)
        if progress is not None:
            progress(checkpoint)
    if not checkpoint.done:
        checkpoint.done = True
        await state.save_checkpoint(checkpoint)
    return checkpoint


async def arxiv_daily(
    sources: Sources,
    broker: RedisBroker,
    seen: SeenPapers,
    state: SourceState,
    *,
    categories: Sequence[str],
    cursor: str,
    now: datetime,
) -> RunReport:
    """Publish the papers of the latest announcement not published yet.

    ``cursor`` is the date of the last announcement read. When announcements came out between it
    and this one (the service was stopped), their days are caught up through OAI-PMH first.
    """
    announcement = await asyncio.to_thread(sources.feed.announcement, categories, now=now)
    report = RunReport(cursor=cursor)
    last = date.fromisoformat(cursor) if cursor else None
    if announcement.day is None or not announcement.listings:
        report.detail = "no announcement (weekend or holiday)"
        if announcement.day is not None and (last is None or announcement.day > last):
            # Nothing was announced that day: no catch-up will be needed for it.
            report.cursor = announcement.day.isoformat()
        return report
    if last is not None and announcement.day <= last:
        report.detail = f"announcement of {announcement.day} already read"
        return report
    if last is not None and missed_announcements(last, announcement.day):
        job = "catch-up:" + backfill_job(categories, last, announcement.day)
        caught = await backfill(
            sources.oai,
            broker,
            seen,
            state,
            categories=categories,
            start=last,
            end=announcement.day,
            now=now,
            job=job,
        )
        await state.forget_checkpoint(job)
        report.found += caught.records
        report.published += caught.published
    ids = [listing.paper_id for listing in announcement.listings]
    metadata = await asyncio.to_thread(sources.metadata.papers, ids, now=now, source=arxiv.SOURCE)
    papers = arxiv.announced_papers(announcement, metadata)
    fresh = await publish_unseen(broker, seen, papers)
    report.found += len(papers)
    report.published += len(fresh)
    report.cursor = announcement.day.isoformat()
    counts = announcement.counts()
    report.detail = f"{announcement.day}: " + ", ".join(
        f"{n} {t}" for t, n in sorted(counts.items())
    )
    return report


async def hf_daily(
    sources: Sources,
    broker: RedisBroker,
    seen: SeenPapers,
    *,
    days: Sequence[date],
    now: datetime,
) -> RunReport:
    """Publish the papers listed on ``days`` that are new, or whose upvotes changed.

    Each is the arXiv paper (metadata from the arXiv API, so its text is the one the arXiv
    source publishes and embed keeps its vector) with its upvotes as ``popularity``; HF's own
    fields stand in for a paper the API does not know.
    """
    listed: dict[str, hf.Upvoted] = {}
    for day in days:
        for item in await asyncio.to_thread(sources.daily_papers.listing, day, now=now):
            listed[item.paper_id] = item
    metadata = await asyncio.to_thread(
        sources.metadata.papers, list(listed), now=now, source=hf.SOURCE
    )
    papers = []
    for paper_id, item in listed.items():
        paper = metadata.get(paper_id) or item.paper
        if paper is not None:
            papers.append(paper.model_copy(update={"popularity": item.upvotes}))
    fresh = await publish_unseen(broker, seen, papers)
    return RunReport(
        found=len(papers),
        published=len(fresh),
        cursor=max(days).isoformat() if days else "",
        detail=f"{min(days)} to {max(days)}" if days else "",
    )


def jobs(
    settings: Settings,
    sources: Sources,
    broker: RedisBroker,
    seen: SeenPapers,
    state: SourceState,
) -> list[Job]:
    """The enabled sources as poller jobs."""
    found: list[Job] = []
    if "arxiv" in settings.sources:

        async def run_arxiv(status: SourceStatus, now: datetime) -> RunReport:
            return await arxiv_daily(
                sources,
                broker,
                seen,
                state,
                categories=settings.arxiv_categories,
                cursor=status.cursor,
                now=now,
            )

        def arxiv_next(now: datetime, last: datetime | None) -> datetime:
            return arxiv_due(now, last, settings.arxiv_poll_time)

        found.append(Job("arxiv", run_arxiv, arxiv_next))
    if "hf" in settings.sources:

        async def run_hf(status: SourceStatus, now: datetime) -> RunReport:
            days = hf_days(now, status.cursor, settings.hf_days)
            return await hf_daily(sources, broker, seen, days=days, now=now)

        def hf_next(now: datetime, last: datetime | None) -> datetime:
            return hf_due(now, last, timedelta(minutes=settings.hf_poll_minutes))

        found.append(Job("hf", run_hf, hf_next))
    return found
