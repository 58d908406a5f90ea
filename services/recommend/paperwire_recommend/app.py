"""Wiring of the recommend service: FastAPI app, broker, subscribers, scheduler, probes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI, Response
from faststream.redis import RedisBroker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_fastapi_instrumentator import Instrumentator
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from paperwire_recommend import api, auth, handlers, web
from paperwire_recommend.config import Settings
from paperwire_recommend.encoder import RemoteEncoder, TextEncoder
from paperwire_recommend.metrics import Metrics
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.scheduler import Scheduler
from paperwire_recommend.store import Store
from paperwire_shared import streams
from paperwire_shared.delivery import DeliveryPolicy, StreamConsumer
from paperwire_shared.events import DigestDue
from paperwire_shared.links import signer_for
from paperwire_shared.service import service_broker, stop_task
from paperwire_shared.streamstats import StreamStatsCollector
from paperwire_shared.vectors import VectorStore, open_vector_store


def create_app(
    settings: Settings,
    *,
    broker: RedisBroker | None = None,
    store: Store | None = None,
    vectors: VectorStore | None = None,
    encoder: TextEncoder | None = None,
    ensure_groups: bool = True,
    run_scheduler: bool = True,
) -> FastAPI:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    # The state of every stream and group, read at each scrape (see streamstats.py).
    stream_stats = StreamStatsCollector(settings.redis_url if ensure_groups else None)
    registry.register(stream_stats)
    if broker is None:
        broker = service_broker(settings.redis_url, registry, "recommend")
    owns_vectors = vectors is None
    sql = store or Store(settings.sql_url)
    vectors = vectors or open_vector_store(settings.qdrant_url, settings.qdrant_path)
    recommender = Recommender(
        settings, sql, vectors, encoder or RemoteEncoder(broker, settings.encode_timeout_seconds)
    )

    metrics.nearest_papers.set_function(recommender.nearest.papers_found)
    metrics.catalogued_papers.set_function(lambda: len(recommender.catalogue))
    metrics.nearest_pass_done.set_function(lambda: recommender.nearest_pass_done)

    async def publish(digest: DigestDue) -> None:
        await broker.publish(digest, stream=streams.DIGESTS_DUE)

    scheduler = Scheduler(settings, sql, recommender, publish, metrics)

    async def database_ready() -> bool:
        return await asyncio.to_thread(sql.ping)

    consumer = StreamConsumer(
        broker,
        group=streams.RECOMMEND_GROUP,
        consumer=settings.consumer,
        policy=DeliveryPolicy(
            reclaim_after=settings.reclaim_after_seconds, max_deliveries=settings.max_deliveries
        ),
        dependencies={"database": database_ready},
        registry=registry,
    )
    handlers.register(
        broker,
        store=sql,
        metrics=metrics,
        consumer=consumer,
        defaults=scheduler.defaults,
        bounce_limit=settings.bounce_limit,
    )
    signer = signer_for(settings.secret_key, settings.environment, settings.data_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ensure_groups:
            await streams.ensure_groups(settings.redis_url)
        await broker.start()
        # Everything imported and built so far lives as long as the process: keep the garbage
        # collector from walking it. Each full collection walked ~190k such objects in ~120 ms,
        # which showed as the slowest first requests (bench/README.md); after this, ~4 ms.
        gc.collect()
        gc.freeze()
        # One thread per matrix product: requests run side by side in threads already, and the
        # products of one request are small. With numpy's default (a thread per core), OpenBLAS's
        # threads spun on the other core after each product: a 200-paper library's request took
        # ~100-107 ms of CPU for ~52-57 ms of wall time, ~55 ms with one (bench/README.md).
        blas = threadpool_limits(limits=settings.blas_threads, user_api="blas")
        task = asyncio.create_task(scheduler.run()) if run_scheduler else None
        try:
            yield
        finally:
            blas.restore_original_limits()
            await stop_task(task)
            await recommender.close()
            await broker.stop()
            if owns_vectors:
                await asyncio.to_thread(vectors.close)
            sql.close()
            await stream_stats.aclose()
            gc.unfreeze()  # what this app held can be collected again (tests start many apps)

    app = FastAPI(
        title="paperwire",
        summary="New research papers, matched to each user's interests.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.store = sql
    app.state.recommender = recommender
    app.state.scheduler = scheduler
    app.state.metrics = metrics
    app.state.broker = broker
    app.state.credentials = auth.Credentials(
        auth.api_key_for(settings.api_key, settings.environment, settings.data_dir), signer
    )
    # Every route but the probes is rate limited per caller; bodies are capped as they arrive.
    app.add_middleware(
        auth.RateLimit,
        rate=settings.rate_limit,
        exempt=frozenset({"/healthz", "/readyz", "/metrics"}),
    )
    app.add_middleware(auth.BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(api.router)
    web.install(
        app,
        web.Web(
            store=sql,
            signer=signer,
            broker=broker,
            recommender=recommender,
            defaults=scheduler.defaults,
            public_url=settings.public_url,
        ),
    )
    # HTTP request counts and latencies per route template (bounded: never the raw path), on
    # this app's registry. The probes and /metrics itself would only add noise.
    Instrumentator(
        registry=registry, excluded_handlers=["^/metrics$", "^/healthz$", "^/readyz$"]
    ).instrument(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, object]:
        checks = {
            "redis": await _safe(broker.ping(timeout=2)),
            "database": await _safe(asyncio.to_thread(sql.ping)),
            "qdrant": await _safe(asyncio.to_thread(vectors.ping)),
        }
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": checks}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        await stream_stats.refresh()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _safe(check: object) -> bool:
    try:
        return bool(await asyncio.wait_for(check, timeout=3))  # type: ignore[arg-type]
    except Exception:  # a readiness probe reports failures, it never raises
        return False
