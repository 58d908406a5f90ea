"""recommend in-process for tests: its real app, Store (SQLite) and Qdrant Edge, the stand-in encoder.

Streams run in memory (FastStream's TestRedisBroker, entered by the caller); no stream groups are
created and the digest scheduler's loop does not run (tests call its tick).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from faststream.redis import RedisBroker

from paperwire_recommend.app import create_app
from paperwire_recommend.config import Settings
from paperwire_recommend.store import Store
from paperwire_shared.vectors import StoredPaper, VectorStore
from tests.fakes import HashingEncoder, LocalTextEncoder


def recommend_app(
    data_dir: Path,
    *,
    store: Store,
    vectors: VectorStore,
    broker: RedisBroker | None = None,
    encoder: HashingEncoder | None = None,
    **settings: Any,
) -> FastAPI:
    """recommend's app over ``store`` and ``vectors``; ``settings`` override Settings' defaults."""
    return create_app(
        Settings(redis_url="redis://unused", data_dir=data_dir, **settings),
        broker=broker,
        store=store,
        vectors=vectors,
        encoder=LocalTextEncoder(encoder or HashingEncoder()),
        ensure_groups=False,
        run_scheduler=False,
    )


def stored_papers(
    titles: Mapping[str, str], encoder: HashingEncoder, at: float, **payload: Any
) -> list[StoredPaper]:
    """One stored arXiv paper per id and title, embedded and published at ``at`` (unix seconds),
    with the stand-in vector of its title; ``payload`` adds fields (abstract, authors...)."""
    vectors = encoder.encode(list(titles.values()))
    return [
        StoredPaper(
            pid,
            {
                "paper_id": pid,
                "title": title,
                **payload,
                "url": f"https://arxiv.org/abs/{pid}",
                "embedded_at": at,
                "published_ts": at,
            },
            vector,
        )
        for (pid, title), vector in zip(titles.items(), vectors, strict=True)
    ]


@asynccontextmanager
async def asgi_client(
    app: FastAPI, base_url: str = "http://test", headers: Mapping[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling ``app`` in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as client:
        yield client


@asynccontextmanager
async def served(app: FastAPI, port: int, **config: Any) -> AsyncIterator[None]:
    """``app`` served by uvicorn on 127.0.0.1:``port`` while the block runs."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await serving
