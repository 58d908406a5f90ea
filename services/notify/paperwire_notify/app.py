"""Wires notify: broker, ledger, mailer, the DigestDue subscriber and the HTTP probes."""

from __future__ import annotations

import asyncio

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry

from paperwire_notify import handlers
from paperwire_notify.config import Settings
from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import Mailer, SmtpMailer
from paperwire_notify.metrics import NotifyMetrics
from paperwire_shared.service import stream_service


def create_app(
    settings: Settings,
    *,
    broker: RedisBroker | None = None,
    mailer: Mailer | None = None,
    ensure_groups: bool = True,
) -> AsgiFastStream:
    """notify as an ASGI app; nothing connects until it starts.

    ``ensure_groups=False`` skips creating the consumer groups, for a broker under TestRedisBroker.
    """
    registry = CollectorRegistry()
    metrics = NotifyMetrics(registry)
    if broker is None:
        broker = RedisBroker(
            settings.redis_url,
            middlewares=[RedisPrometheusMiddleware(registry=registry, app_name="notify")],
        )
    mail = mailer if mailer is not None else SmtpMailer(settings.smtp_url)
    ledger = Ledger(settings.database_url)
    handlers.register(broker, settings, ledger=ledger, mailer=mail, metrics=metrics)

    async def create_tables() -> None:
        await asyncio.to_thread(ledger.create_tables)

    async def database_ready() -> bool:
        return await asyncio.to_thread(ledger.ping)

    async def close_ledger() -> None:
        await asyncio.to_thread(ledger.close)

    return stream_service(
        broker,
        registry=registry,
        redis_url=settings.redis_url if ensure_groups else None,
        ready_checks={"database": database_ready, "smtp": mail.ping},
        on_startup=[create_tables],
        after_shutdown=[close_ledger],
    )
