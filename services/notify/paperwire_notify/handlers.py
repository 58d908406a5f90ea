"""The DigestDue subscriber: deliver the digest, then report the outcome back to recommend."""

from __future__ import annotations

from faststream.redis import RedisBroker

from paperwire_notify.delivery import Deliverer
from paperwire_notify.ledger import DeliveryInProgress
from paperwire_shared.delivery import StreamConsumer
from paperwire_shared.events import DigestDue, DigestSent
from paperwire_shared.streams import DIGESTS_DUE, DIGESTS_FAILED, DIGESTS_SENT


def register(broker: RedisBroker, consumer: StreamConsumer, *, deliverer: Deliverer) -> None:
    """Subscribe notify to ``DIGESTS_DUE`` as ``consumer`` of its group."""

    # DeliveryInProgress: another worker holds the digest's claim in the ledger. Not a failure: the
    # entry comes back later, when that worker is done or its claim has expired (it crashed).
    @consumer.handler(DIGESTS_DUE, retry_later=(DeliveryInProgress,))
    async def on_digest_due(digest: DigestDue) -> None:
        outcome = await deliverer.deliver(digest)
        # Published before the entry is acked: a crash here redelivers the digest, and the ledger
        # turns that into a repeated report, never a second email.
        stream = DIGESTS_SENT if isinstance(outcome, DigestSent) else DIGESTS_FAILED
        await broker.publish(outcome, stream=stream)
