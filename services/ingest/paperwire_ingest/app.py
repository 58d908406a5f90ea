"""Wiring of the ingest service: broker, de-duplication memory, inbox poller, source poller, probes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from prometheus_client import CollectorRegistry

from paperwire_ingest.config import Settings
from paperwire_ingest.importing import ImportReport, import_file
from paperwire_ingest.inbox import InboxPoller, InboxResult
from paperwire_ingest.metrics import Metrics
from paperwire_ingest.seen import RedisSeenPapers, SeenPapers
from paperwire_ingest.state import RedisSourceState, SourceState
from paperwire_shared.service import service_broker, stream_service

if TYPE_CHECKING:
    from paperwire_ingest.harvesting import Sources


def create_app(
    settings: Settings,
    *,
    broker: RedisBroker | None = None,
    seen: SeenPapers | None = None,
    ensure_groups: bool = True,
    sources: Sources | None = None,
    source_state: SourceState | None = None,
) -> AsgiFastStream:
    """The service; ``sources`` and ``source_state`` replace the network and Redis in tests.

    Network sources run only when ``settings.sources`` names them; a failing one is reported
    (log, metrics, ``paperwire sources``) and tried again, and never stops the service.
    """
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if broker is None:
        broker = service_broker(settings.redis_url, registry, "ingest")
    owned_seen: RedisSeenPapers | None = None
    if seen is None:
        seen = owned_seen = RedisSeenPapers.from_url(settings.redis_url)
    seen_papers: SeenPapers = seen

    async def import_one(path: Path) -> ImportReport:
        return await import_file(
            path, broker, seen_papers, now=datetime.now(UTC), progress=metrics.recorder()
        )

    def count_file(result: InboxResult) -> None:
        metrics.inbox_files.labels(result.outcome).inc()

    poller = InboxPoller(
        settings.inbox_dir,
        import_one,
        poll_seconds=settings.inbox_poll_seconds,
        on_result=count_file,
    )

    async def start_poller() -> None:
        poller.start()

    async def inbox_ready() -> bool:
        return poller.running

    async def close_seen() -> None:
        if owned_seen is not None:
            await owned_seen.aclose()

    ready_checks = {"inbox": inbox_ready}
    if owned_seen is not None:
        ready_checks["seen"] = owned_seen.ping
    after_startup: list[Callable[[], Any]] = [start_poller]
    on_shutdown: list[Callable[[], Any]] = [poller.stop]
    after_shutdown: list[Callable[[], Any]] = [close_seen]
    if settings.sources:
        # Imported here: the source libraries take ~1 s to load, wasted on an offline install.
        from paperwire_ingest.harvesting import jobs, open_sources
        from paperwire_ingest.schedule import SourcePoller

        if sources is None:
            sources = open_sources(settings)
            after_shutdown.append(sources.close)
        if source_state is None:
            owned_state = source_state = RedisSourceState.from_url(settings.redis_url)
            after_shutdown.append(owned_state.aclose)
        source_poller = SourcePoller(
            jobs(settings, sources, broker, seen_papers, source_state),
            source_state,
            retry=timedelta(minutes=settings.source_retry_minutes),
            on_run=metrics.source_run,
        )
        after_startup.append(source_poller.start)
        on_shutdown.append(source_poller.stop)
    return stream_service(
        broker,
        registry=registry,
        redis_url=settings.redis_url if ensure_groups else None,
        ready_checks=ready_checks,
        after_startup=after_startup,
        on_shutdown=on_shutdown,
        after_shutdown=after_shutdown,
    )
