"""Stream subscribers of recommend: papers that became available, feedback from users."""

from __future__ import annotations

import asyncio

from faststream.redis import RedisBroker, StreamSub

from paperwire_recommend.metrics import Metrics
from paperwire_recommend.store import Store
from paperwire_shared import streams
from paperwire_shared.events import FeedbackRecorded, PaperEmbedded


def register(broker: RedisBroker, *, store: Store, metrics: Metrics, consumer: str) -> None:
    def sub(stream: str) -> StreamSub:
        return StreamSub(
            stream,
            group=streams.RECOMMEND_GROUP,
            consumer=consumer,
            max_records=streams.MAX_RECORDS,
            declare=False,
        )

    @broker.subscriber(stream=sub(streams.PAPERS_EMBEDDED))
    async def on_paper_embedded(event: PaperEmbedded) -> None:
        # Candidates are read from the vector store when a digest is built; this only counts.
        metrics.papers_available.inc()

    @broker.subscriber(stream=sub(streams.FEEDBACK_RECORDED))
    async def on_feedback_recorded(event: FeedbackRecorded) -> None:
        recorded = await asyncio.to_thread(
            store.record_feedback,
            event.feedback_id,
            event.user_id,
            event.paper_id,
            event.kind,
            event.reason,
            event.recorded_at,
        )
        if recorded:
            metrics.feedback.labels(event.kind).inc()
