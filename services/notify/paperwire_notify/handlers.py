"""The DigestDue subscriber: claim in the ledger, render, send, record the outcome."""

from __future__ import annotations

import asyncio
import logging

from faststream.redis import RedisBroker, StreamSub

from paperwire_notify.config import Settings
from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import Mailer, PermanentSendError
from paperwire_notify.metrics import NotifyMetrics
from paperwire_notify.render import InvalidRecipient, message_id, render_digest
from paperwire_shared.events import DigestDue
from paperwire_shared.streams import DIGESTS_DUE, MAX_RECORDS, NOTIFY_GROUP

log = logging.getLogger(__name__)


def register(
    broker: RedisBroker,
    settings: Settings,
    *,
    ledger: Ledger,
    mailer: Mailer,
    metrics: NotifyMetrics,
) -> None:
    """Subscribe notify to ``DIGESTS_DUE`` in its group on ``broker``."""
    source = StreamSub(
        DIGESTS_DUE,
        group=NOTIFY_GROUP,
        consumer=settings.consumer,
        max_records=MAX_RECORDS,
        declare=False,  # ensure_groups made the group at 0; FastStream would make it at $
    )

    @broker.subscriber(stream=source)
    async def on_digest_due(digest: DigestDue) -> None:
        key = digest.digest_key
        # Raises DeliveryInProgress while another worker sends it: the entry stays pending.
        claimed = await asyncio.to_thread(ledger.begin, key, digest.user_id, message_id(key))
        if not claimed:
            log.info("digest %s for user %s already sent: skipped", key, digest.user_id)
            metrics.duplicates.inc()
            return
        if not digest.papers:
            log.warning("digest %s for user %s has no papers: not sent", key, digest.user_id)
            await asyncio.to_thread(ledger.mark_failed, key, "empty")
            metrics.failed.labels("empty").inc()
            return
        try:
            msg = render_digest(digest, sender=settings.mail_from, base_url=settings.public_url)
            with metrics.send_duration.time():
                await mailer.send(msg)
        except (InvalidRecipient, PermanentSendError) as exc:
            log.warning("digest %s for user %s refused for good: %s", key, digest.user_id, exc)
            await asyncio.to_thread(ledger.mark_failed, key, str(exc))
            metrics.failed.labels("permanent").inc()
            return
        except Exception as exc:
            # Transient (or unexpected): free the claim and re-raise, so the entry stays pending
            # (FastStream's reject-on-error sends no XACK). Nothing claims it back yet: the
            # reclaimer (XAUTOCLAIM) comes with the retry work.
            await asyncio.to_thread(ledger.mark_failed, key, f"retryable: {exc}")
            metrics.retried.inc()
            raise
        await asyncio.to_thread(ledger.mark_sent, key)
        metrics.sent.inc()
        log.info("digest %s for user %s sent (%d papers)", key, digest.user_id, len(digest.papers))
