"""The HTTP face every stream service has: /healthz, /readyz and /metrics around a FastStream broker.

Shared (not copied into each service) because ingest, embed and notify need exactly the same three
routes; recommend serves the same paths from FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.redis import RedisBroker
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from paperwire_shared.janitor import run_janitor
from paperwire_shared.streams import ensure_groups
from paperwire_shared.streamstats import StreamStatsCollector

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[bool]]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background loop and wait until it has stopped (None: nothing to stop)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def service_broker(redis_url: str, registry: CollectorRegistry, name: str) -> RedisBroker:
    """A service's broker, its messages counted in ``registry`` under ``name``.

    FastStream's "Received" and "Processed" lines, two per message, are left out unless the log
    is at debug level (`paperwire -v`): a day of arXiv papers wrote thousands of them. A failed
    message is always logged at error level, with its traceback.
    """
    # FastStream's own logger stays at info: its lines are shown by logging them at info.
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    return RedisBroker(
        redis_url,
        middlewares=[RedisPrometheusMiddleware(registry=registry, app_name=name)],
        log_level=logging.INFO if verbose else logging.DEBUG,
    )


def stream_service(
    broker: RedisBroker,
    *,
    registry: CollectorRegistry,
    redis_url: str | None,
    ready_checks: Mapping[str, ReadyCheck] = {},  # noqa: B006 - read only
    on_startup: Sequence[Callable[[], Any]] = (),
    after_startup: Sequence[Callable[[], Any]] = (),
    on_shutdown: Sequence[Callable[[], Any]] = (),
    after_shutdown: Sequence[Callable[[], Any]] = (),
) -> AsgiFastStream:
    """An ASGI app running ``broker``; groups are created at 0 first unless ``redis_url`` is None.

    /metrics also reports the state of every stream and group (see streamstats.py), read from
    ``redis_url`` at each scrape; with None those families are exported empty. With a
    ``redis_url`` the service also runs the stream janitor (janitor.py): any number may run.
    """
    stream_stats = StreamStatsCollector(redis_url)
    registry.register(stream_stats)

    @get(include_in_schema=False)
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b"ok\n", 200)

    @get(include_in_schema=False)
    async def readyz(scope: Any) -> AsgiResponse:
        checks = {"redis": lambda: broker.ping(timeout=2), **ready_checks}
        failed = []
        for name, check in checks.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=3)
            except Exception:  # a readiness probe reports failures, it never raises
                ok = False
            if not ok:
                failed.append(name)
        if failed:
            return AsgiResponse(f"not ready: {', '.join(failed)}\n".encode(), 503)
        return AsgiResponse(b"ready\n", 200)

    @get(include_in_schema=False)
    async def metrics(scope: Any) -> AsgiResponse:
        await stream_stats.refresh()
        return AsgiResponse(
            generate_latest(registry), 200, headers={"content-type": CONTENT_TYPE_LATEST}
        )

    async def create_groups() -> None:
        if redis_url is not None:
            await ensure_groups(redis_url)

    janitor: list[asyncio.Task[None]] = []

    async def start_janitor() -> None:
        if redis_url is not None:
            janitor.append(asyncio.create_task(run_janitor(redis_url), name="stream-janitor"))

    async def stop_janitor() -> None:
        for task in janitor:
            task.cancel()
        await asyncio.gather(*janitor, return_exceptions=True)

    return AsgiFastStream(
        broker,
        asgi_routes=[("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)],
        on_startup=[create_groups, *on_startup],
        after_startup=[*after_startup, start_janitor],
        on_shutdown=[stop_janitor, *on_shutdown],
        after_shutdown=[*after_shutdown, stream_stats.aclose],
    )
