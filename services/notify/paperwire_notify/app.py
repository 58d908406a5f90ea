"""Wires notify: broker, ledger, mailer, the DigestDue subscriber and the HTTP probes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from prometheus_client import CollectorRegistry

from paperwire_notify import handlers
from paperwire_notify.config import Settings
from paperwire_notify.delivery import Deliverer, RetryPolicy
from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import Mailer, SmtpMailer
from paperwire_notify.metrics import NotifyMetrics
from paperwire_shared.delivery import DeliveryPolicy, StreamConsumer
from paperwire_shared.links import signer_for
from paperwire_shared.service import service_broker, stream_service
from paperwire_shared.streams import NOTIFY_GROUP


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
        broker = service_broker(settings.redis_url, registry, "notify")
    mail = metrics.metered(mailer if mailer is not None else SmtpMailer(settings.smtp_url))
    ledger = Ledger(
        settings.database_url, claim_timeout=timedelta(seconds=settings.claim_timeout_seconds)
    )
    signer = signer_for(settings.secret_key, settings.environment, settings.data_dir)
    deliverer = Deliverer(
        ledger=ledger,
        mailer=mail,
        metrics=metrics,
        sender=settings.mail_from,
        base_url=settings.public_url,
        signer=signer,
        max_papers=settings.max_papers,
        policy=RetryPolicy(
            delays=settings.send_retry_delays,
            base=timedelta(seconds=settings.retry_base_seconds),
            cap=timedelta(seconds=settings.retry_max_seconds),
            max_attempts=settings.max_attempts,
        ),
    )

    async def database_ready() -> bool:
        return await asyncio.to_thread(ledger.ping)

    checks = {"database": database_ready, "smtp": mail.ping}
    consumer = StreamConsumer(
        broker,
        group=NOTIFY_GROUP,
        consumer=settings.consumer,
        policy=DeliveryPolicy(
            reclaim_after=settings.reclaim_after_seconds, max_deliveries=settings.max_deliveries
        ),
        dependencies=checks,  # while one is down, digests wait unread instead of failing
        registry=registry,
    )
    handlers.register(broker, consumer, deliverer=deliverer)

    async def create_tables() -> None:
        await asyncio.to_thread(ledger.create_tables)

    async def close_ledger() -> None:
        await asyncio.to_thread(ledger.close)

    return stream_service(
        broker,
        registry=registry,
        redis_url=settings.redis_url if ensure_groups else None,
        ready_checks=checks,
        on_startup=[create_tables],
        after_shutdown=[close_ledger],
    )
