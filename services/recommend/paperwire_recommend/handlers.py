"""Stream subscribers of recommend: papers that became available, feedback, delivery outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from faststream.redis import RedisBroker

from paperwire_recommend.delivery import DEFAULT_BOUNCE_LIMIT, after_bounce, after_delivery
from paperwire_recommend.digest import Schedule
from paperwire_recommend.metrics import Metrics
from paperwire_recommend.store import Store, Subscription
from paperwire_shared import streams
from paperwire_shared.delivery import StreamConsumer
from paperwire_shared.events import DigestFailed, DigestSent, FeedbackRecorded, PaperEmbedded


def register(
    broker: RedisBroker,
    *,
    store: Store,
    metrics: Metrics,
    consumer: StreamConsumer,
    defaults: Schedule = Schedule(),  # noqa: B008 - frozen
    bounce_limit: int = DEFAULT_BOUNCE_LIMIT,
) -> None:
    @consumer.handler(streams.PAPERS_EMBEDDED)
    async def on_paper_embedded(event: PaperEmbedded) -> None:
        # Candidates are read from the vector store when a digest is built; this only counts.
        metrics.papers_available.inc()

    @consumer.handler(streams.FEEDBACK_RECORDED)
    async def on_feedback_recorded(event: FeedbackRecorded) -> None:
        if await asyncio.to_thread(store.record_feedback, event):
            metrics.feedback.labels(event.kind).inc()

    def change_subscription(user_id: str, change: Callable[[Subscription], Subscription]) -> None:
        user = store.get_user(user_id)
        if user is None:
            return  # deleted meanwhile
        sub = store.get_subscription(user, defaults)
        if (changed := change(sub)) != sub:
            store.save_subscription(changed, datetime.now(UTC))

    @consumer.handler(streams.DIGESTS_SENT)
    async def on_digest_sent(event: DigestSent) -> None:
        if await asyncio.to_thread(
            store.mark_sent, event.digest_key, event.message_id, event.sent_at
        ):
            await asyncio.to_thread(change_subscription, event.user_id, after_delivery)
            metrics.digests_sent.inc()

    @consumer.handler(streams.DIGESTS_FAILED)
    async def on_digest_failed(event: DigestFailed) -> None:
        changed = await asyncio.to_thread(
            store.mark_failed,
            event.digest_key,
            event.reason,
            event.attempts,
            event.retry_at,
            event.failed_at,
        )
        if changed and event.bounced:
            bounce = partial(after_bounce, limit=bounce_limit)
            await asyncio.to_thread(change_subscription, event.user_id, bounce)
        if changed and event.retry_at is None:
            metrics.digests_failed.inc()
