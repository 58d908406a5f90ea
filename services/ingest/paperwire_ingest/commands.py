"""The ``paperwire`` subcommands for network sources: ``ingest arxiv``, ``ingest hf``, ``sources``.

They run in the CLI's own process against the stack's Redis: papers go through the same seen
memory as the service's, and arXiv requests share the service's rate limit (a Redis key).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime

from faststream.redis import RedisBroker
from tqdm import tqdm  # type: ignore[import-untyped]

from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import Sources, backfill, backfill_job, hf_daily, open_sources
from paperwire_ingest.seen import RedisSeenPapers
from paperwire_ingest.sources.oai import set_spec
from paperwire_ingest.state import Checkpoint, RedisSourceState, SourceStatus
from paperwire_shared.streams import ensure_groups


@contextlib.asynccontextmanager
async def _connected(
    settings: Settings, sources: Sources | None
) -> AsyncIterator[tuple[Sources, RedisBroker, RedisSeenPapers, RedisSourceState]]:
    # Groups at 0 before the first event, so an embed worker started later reads everything.
    await ensure_groups(settings.redis_url)
    opened = sources is None
    sources = sources or open_sources(settings)
    seen = RedisSeenPapers.from_url(settings.redis_url)
    state = RedisSourceState.from_url(settings.redis_url)
    try:
        async with RedisBroker(settings.redis_url) as broker:
            yield sources, broker, seen, state
    finally:
        await seen.aclose()
        await state.aclose()
        if opened:
            sources.close()


async def backfill_arxiv(
    settings: Settings,
    categories: Sequence[str],
    start: date,
    end: date,
    *,
    restart: bool = False,
    sources: Sources | None = None,
    show_progress: bool = True,
) -> Checkpoint:
    """``paperwire ingest arxiv``: harvest a date range, resuming the same range's checkpoint."""
    if end < start:
        raise ValueError(f"--until {end} is before --from {start}")
    job = backfill_job(categories, start, end)
    async with _connected(settings, sources) as (opened, broker, seen, state):
        if restart:
            await state.forget_checkpoint(job)
        found = await state.checkpoint(job)
        if found is not None and found.done:
            return found
        sets = {set_spec(category) for category in categories}
        units = found.units if found else len(sets) * ((end - start).days + 1)
        with tqdm(
            total=units,
            initial=found.unit if found else 0,
            unit="day",
            desc=f"arXiv {','.join(categories)}",
            disable=not show_progress,
        ) as bar:

            def progress(checkpoint: Checkpoint) -> None:
                bar.update(checkpoint.unit - bar.n)
                bar.set_postfix(published=checkpoint.published, refresh=False)

            return await backfill(
                opened.oai,
                broker,
                seen,
                state,
                categories=categories,
                start=start,
                end=end,
                now=datetime.now(UTC),
                progress=progress,
            )


async def ingest_hf(
    settings: Settings, day: date, *, sources: Sources | None = None
) -> tuple[int, int]:
    """``paperwire ingest hf``: one day's daily papers; (found, published)."""
    async with _connected(settings, sources) as (opened, broker, seen, _):
        report = await hf_daily(opened, broker, seen, days=[day], now=datetime.now(UTC))
    return report.found, report.published


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def describe_source(status: SourceStatus) -> list[str]:
    state = "failing" if status.failures else ("ok" if status.last_success else "not run yet")
    lines = [
        f"{status.name}: {state}" + ("" if status.enabled else " (not in INGEST_SOURCES)"),
        f"  last run      {_when(status.last_run)}",
        f"  last success  {_when(status.last_success)}",
        f"  next run      {_when(status.next_run)}" if status.enabled else "  next run      -",
        f"  last success found {status.found} papers, {status.published} new"
        f" ({status.published_total} new in all)",
    ]
    if status.detail:
        lines.append(f"  {status.detail}")
    if status.failures:
        lines.append(f"  error ({status.failures} runs in a row): {status.last_error}")
    return lines


def describe_backfill(checkpoint: Checkpoint) -> str:
    progress = (
        "done" if checkpoint.done else f"{checkpoint.unit} of {checkpoint.units} category-days"
    )
    return (
        f"backfill {checkpoint.job}: {progress}, {checkpoint.records} records read, "
        f"{checkpoint.published} papers published (updated {_when(checkpoint.updated_at)})"
    )


async def source_report(redis_url: str) -> list[str]:
    """``paperwire sources``: each source's status and each backfill's progress, as lines."""
    state = RedisSourceState.from_url(redis_url)
    try:
        statuses = await state.statuses()
        checkpoints = await state.checkpoints()
    finally:
        await state.aclose()
    lines: list[str] = []
    for status in statuses:
        lines.extend(describe_source(status))
    if not statuses:
        lines.append("no network source has run: set INGEST_SOURCES=arxiv,hf to follow them")
    lines.extend(describe_backfill(checkpoint) for checkpoint in checkpoints)
    return lines


def ingest_source(
    source: str,
    redis_url: str,
    *,
    categories: Sequence[str] | None = None,
    start: date | None = None,
    until: date | None = None,
    day: date | None = None,
    restart: bool = False,
) -> str:
    """Run ``paperwire ingest arxiv|hf`` and say what it did; raises ``ValueError`` for a usage
    problem, ``SourceError`` when the source cannot be read now."""
    if categories:
        settings = Settings(redis_url=redis_url, arxiv_categories=list(categories))
    else:
        settings = Settings(redis_url=redis_url)
    today = datetime.now(UTC).date()
    if source == "hf":
        day = day or today
        found, published = asyncio.run(ingest_hf(settings, day))
        return (
            f"Hugging Face daily papers of {day}: {found} papers found, "
            f"{published} published (new, or with new upvotes)"
        )
    if not settings.arxiv_categories:
        raise ValueError(
            "name the categories: --categories cs.LG,cs.CL (or INGEST_ARXIV_CATEGORIES)"
        )
    if start is None:
        raise ValueError("--from DATE is required: the first day to harvest (YYYY-MM-DD)")
    checkpoint = asyncio.run(
        backfill_arxiv(settings, settings.arxiv_categories, start, until or today, restart=restart)
    )
    return describe_backfill(checkpoint)
