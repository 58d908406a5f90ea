"""Wiring of the embed service: broker, subscribers, model, vector store, HTTP probes."""

from __future__ import annotations

import asyncio

from faststream.asgi import AsgiFastStream
from faststream.redis import RedisBroker
from prometheus_client import CollectorRegistry

from paperwire_embed import handlers
from paperwire_embed.config import Settings
from paperwire_embed.encoder import Encoder, SentenceTransformerEncoder
from paperwire_embed.metrics import Metrics
from paperwire_shared import streams
from paperwire_shared.delivery import DeliveryPolicy, StreamConsumer
from paperwire_shared.service import service_broker, stream_service
from paperwire_shared.vectors import VectorStore, open_vector_store


def create_app(
    settings: Settings,
    *,
    broker: RedisBroker | None = None,
    encoder: Encoder | None = None,
    store: VectorStore | None = None,
    ensure_groups: bool = True,
) -> AsgiFastStream:
    registry = CollectorRegistry()
    if broker is None:
        broker = service_broker(settings.redis_url, registry, "embed")
    encoder = encoder or SentenceTransformerEncoder(
        settings.embed_model, settings.batch_size, settings.backend
    )
    owns_store = store is None
    vectors = store or open_vector_store(settings.qdrant_url, settings.qdrant_path)

    async def qdrant_ready() -> bool:
        return await asyncio.to_thread(vectors.ping)

    consumer = StreamConsumer(
        broker,
        group=streams.EMBED_GROUP,
        consumer=settings.consumer,
        policy=DeliveryPolicy(
            reclaim_after=settings.reclaim_after_seconds, max_deliveries=settings.max_deliveries
        ),
        dependencies={"qdrant": qdrant_ready},
        registry=registry,
    )
    handlers.register(
        broker,
        encoder=encoder,
        store=vectors,
        metrics=Metrics(registry),
        consumer=consumer,
        batch_size=settings.batch_size,
    )

    async def warm_up() -> None:
        # Load the model before the first batch arrives, off the event loop.
        await asyncio.to_thread(encoder.encode, ["warm-up"])

    async def close_store() -> None:
        if owns_store:
            await asyncio.to_thread(vectors.close)

    return stream_service(
        broker,
        registry=registry,
        redis_url=settings.redis_url if ensure_groups else None,
        ready_checks={"qdrant": qdrant_ready},
        on_startup=[warm_up],
        after_shutdown=[close_store],
    )
