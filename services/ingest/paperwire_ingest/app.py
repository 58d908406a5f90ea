"""Wiring of the ingest service: broker, de-duplication memory, inbox poller, HTTP probes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry

from paperwire_ingest.config import Settings
from paperwire_ingest.importing import ImportReport, import_file
from paperwire_ingest.inbox import InboxPoller, InboxResult
from paperwire_ingest.metrics import Metrics
from paperwire_ingest.seen import RedisSeenPapers, SeenPapers
from paperwire_shared.service import stream_service


def create_app(
    settings: Settings,
    *,
    broker: RedisBroker | None = None,
    seen: SeenPapers | None = None,
    ensure_groups: bool = True,
) -> AsgiFastStream:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if broker is None:
        broker = RedisBroker(
            settings.redis_url,
            middlewares=[RedisPrometheusMiddleware(registry=registry, app_name="ingest")],
        )
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
    return stream_service(
        broker,
        registry=registry,
        redis_url=settings.redis_url if ensure_groups else None,
        ready_checks=ready_checks,
        after_startup=[start_poller],
        on_shutdown=[poller.stop],
        after_shutdown=[close_seen],
    )
