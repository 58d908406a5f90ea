"""Delivers one digest: claim it in the ledger, render, send with retries, record the outcome.

The outcome goes back to recommend (DigestSent, DigestFailed), whose delivery log and scheduler
act on it: a transient failure carries ``retry_at`` and recommend hands the digest over again then,
so nothing is lost while the mail server is down, and the stream entry is acknowledged meanwhile.
A 5xx reply is final and counts as a bounce. The ledger makes a second delivery of a sent digest
send nothing (and report DigestSent again, in case the first report was lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import Mailer, PermanentSendError, TransientSendError
from paperwire_notify.metrics import NotifyMetrics
from paperwire_notify.render import InvalidRecipient, message_id, render_digest
from paperwire_shared.events import DigestDue, DigestFailed, DigestSent
from paperwire_shared.links import LinkSigner

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Quick retries within one delivery, then exponential backoff between deliveries."""

    delays: Sequence[float] = (1.0, 5.0)
    base: timedelta = timedelta(minutes=1)
    cap: timedelta = timedelta(hours=1)
    max_attempts: int = 48

    def retry_at(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after ``attempts`` failed deliveries; None: give up."""
        if attempts >= self.max_attempts:
            return None
        return now + min(self.base * 2 ** max(attempts - 1, 0), self.cap)


async def send_with_retries(
    mailer: Mailer, msg: EmailMessage, delays: Sequence[float], sleep: Sleep = asyncio.sleep
) -> None:
    """Send, retrying a transient failure after each delay; the last failure is raised."""
    for delay in delays:
        try:
            await mailer.send(msg)
            return
        except TransientSendError as exc:
            log.info("transient send failure (%s); retrying in %.0f s", exc, delay)
        await sleep(delay)
    await mailer.send(msg)


@dataclass
class Deliverer:
    ledger: Ledger
    mailer: Mailer
    metrics: NotifyMetrics
    sender: str
    base_url: str | None
    signer: LinkSigner | None
    max_papers: int
    policy: RetryPolicy = RetryPolicy()

    async def deliver(self, digest: DigestDue) -> DigestSent | DigestFailed:
        key, user = digest.digest_key, digest.user_id
        mid = message_id(key)
        # Raises DeliveryInProgress while another worker sends it: the entry stays pending.
        if not await asyncio.to_thread(self.ledger.begin, key, user, mid):
            log.info("digest %s for user %s already sent: not sent again", key, user)
            self.metrics.duplicates.inc()
            return DigestSent(digest_key=key, user_id=user, message_id=mid, sent_at=_now())
        if not digest.papers and digest.empty_reason is None:
            log.warning("digest %s for user %s has no papers: not sent", key, user)
            self.metrics.failed.labels("empty").inc()
            return await self._failed(digest, "the digest had no papers")
        try:
            msg = render_digest(
                digest,
                sender=self.sender,
                base_url=self.base_url,
                signer=self.signer,
                max_papers=self.max_papers,
            )
            with self.metrics.send_duration.time():
                await send_with_retries(self.mailer, msg, self.policy.delays)
        except InvalidRecipient as exc:
            self.metrics.failed.labels("permanent").inc()
            return await self._failed(digest, str(exc))
        except PermanentSendError as exc:
            log.warning("digest %s for user %s refused for good: %s", key, user, exc)
            self.metrics.failed.labels("permanent").inc()
            reason = f"your mail server refused it: {exc}"
            return await self._failed(digest, reason, bounced=True)
        except TransientSendError as exc:
            self.metrics.retried.inc()
            attempts = await self._attempts(key)
            retry_at = self.policy.retry_at(attempts, _now())
            if retry_at is None:
                reason = f"gave up after {attempts} attempts: {exc}"
            else:
                reason = f"retrying: {exc}"
            log.info("digest %s for user %s: %s", key, user, reason)
            return await self._failed(digest, reason, retry_at=retry_at)
        await asyncio.to_thread(self.ledger.mark_sent, key)
        self.metrics.sent.inc()
        log.info("digest %s for user %s sent (%d papers)", key, user, len(digest.papers))
        return DigestSent(digest_key=key, user_id=user, message_id=mid, sent_at=_now())

    async def _attempts(self, digest_key: str) -> int:
        row = await asyncio.to_thread(self.ledger.get, digest_key)
        return row.attempts if row else 1

    async def _failed(
        self,
        digest: DigestDue,
        reason: str,
        *,
        retry_at: datetime | None = None,
        bounced: bool = False,
    ) -> DigestFailed:
        # "failed" in the ledger lets the next delivery of this digest claim it again.
        await asyncio.to_thread(self.ledger.mark_failed, digest.digest_key, reason)
        return DigestFailed(
            digest_key=digest.digest_key,
            user_id=digest.user_id,
            reason=reason,
            attempts=await self._attempts(digest.digest_key),
            retry_at=retry_at,
            bounced=bounced,
            failed_at=_now(),
        )


def _now() -> datetime:
    return datetime.now(UTC)
