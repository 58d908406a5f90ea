"""The metric series the four services really export, read from each one's /metrics.

Each service is built as in production (its own broker with FastStream's Prometheus middleware,
its own registry) with stand-ins for the servers, and scraped once in-process: no hand-kept list.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder, LocalTextEncoder

# Nothing listens here: the apps are built, never started, so nothing connects.
UNUSED_REDIS = "redis://127.0.0.1:1/0"

# The series one family of each type exposes (prometheus_client's text format).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "untyped": ("",),
}


class _NoMail:
    async def send(self, msg: EmailMessage) -> None:
        raise AssertionError("nothing is sent while scraping")

    async def ping(self) -> bool:
        return True


def _apps(tmp_path: Path) -> dict[str, tuple[Any, list[Any]]]:
    """service -> (ASGI app, things to close afterwards)."""
    from paperwire_embed.app import create_app as embed_app
    from paperwire_embed.config import Settings as EmbedSettings
    from paperwire_ingest.app import create_app as ingest_app
    from paperwire_ingest.config import Settings as IngestSettings
    from paperwire_notify.app import create_app as notify_app
    from paperwire_notify.config import Settings as NotifySettings
    from paperwire_recommend.app import create_app as recommend_app
    from paperwire_recommend.config import Settings as RecommendSettings
    from paperwire_recommend.store import Store

    common: dict[str, Any] = {"redis_url": UNUSED_REDIS, "data_dir": tmp_path}
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    store = Store(f"sqlite:///{tmp_path / 'recommend.db'}")
    encoder = HashingEncoder()
    return {
        "ingest": (ingest_app(IngestSettings(**common), ensure_groups=False), []),
        "embed": (
            embed_app(EmbedSettings(**common), encoder=encoder, store=vectors, ensure_groups=False),
            [],
        ),
        "recommend": (
            recommend_app(
                RecommendSettings(**common),
                store=store,
                vectors=vectors,
                encoder=LocalTextEncoder(encoder),
                ensure_groups=False,
                run_scheduler=False,
            ),
            [store.close],
        ),
        "notify": (
            notify_app(
                NotifySettings(**common, smtp_url="smtp://127.0.0.1:1"),
                mailer=_NoMail(),
                ensure_groups=False,
            ),
            [vectors.close],
        ),
    }


async def _scrape(app: Any) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    return response.text


def series_names(text: str) -> set[str]:
    """Every series name a scrape can carry, samples or not (a family with no sample yet counts)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def exported_series(tmp_path: Path) -> dict[str, set[str]]:
    """service -> the series names its /metrics exports."""
    found: dict[str, set[str]] = {}
    for name, (app, closers) in _apps(tmp_path).items():
        found[name] = series_names(asyncio.run(_scrape(app)))
        for close in closers:
            close()
    return found
