"""Stream subscribers of embed: PaperIngested in, vectors to Qdrant, PaperEmbedded out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime

from faststream.redis import RedisBroker

from paperwire_embed.encoder import Encoder
from paperwire_embed.metrics import Metrics
from paperwire_embed.planning import (
    is_stale,
    latest_versions,
    needs_encoding,
    payload_for,
    unchanged,
)
from paperwire_shared import streams
from paperwire_shared.delivery import StreamConsumer
from paperwire_shared.events import PaperEmbedded, PaperIngested, TextsEncoded, TextsToEncode
from paperwire_shared.vectors import StoredPaper, VectorStore

log = logging.getLogger(__name__)


def embed_papers(
    papers: list[PaperIngested], encoder: Encoder, store: VectorStore, metrics: Metrics
) -> list[PaperEmbedded]:
    """Store a vector for each paper, running the model only on text not embedded before."""
    papers = latest_versions(papers)
    stored = {s.paper_id: s for s in store.get([p.paper_id for p in papers], with_vectors=True)}
    # Handling an event again changes nothing, and an older one never undoes a newer one.
    papers = [p for p in papers if not is_stale(p, stored.get(p.paper_id))]
    fresh = [p for p in papers if needs_encoding(p, stored.get(p.paper_id), encoder.name)]
    vectors = {}
    if fresh:
        started = time.perf_counter()
        encoded = encoder.encode([p.text for p in fresh])
        metrics.batch_seconds.observe(time.perf_counter() - started)
        vectors = {p.paper_id: row for p, row in zip(fresh, encoded, strict=True)}
    now = datetime.now(UTC)
    points = [
        StoredPaper(
            paper_id=p.paper_id,
            payload=payload_for(p, encoder.name, now, stored.get(p.paper_id)),
            vector=vectors[p.paper_id] if p.paper_id in vectors else stored[p.paper_id].vector,
        )
        for p in papers
    ]
    store.upsert(
        [
            p
            for p in points
            if p.paper_id in vectors or not unchanged(p.payload, stored.get(p.paper_id))
        ]
    )
    metrics.papers_embedded.inc(len(fresh))
    metrics.papers_reused.inc(len(papers) - len(fresh))
    return [
        PaperEmbedded(
            paper_id=p.paper_id,
            content_hash=p.content_hash,
            model=encoder.name,
            version=p.version,
            embedded_at=now,
        )
        for p in papers
    ]


class QueryCache:
    """Vectors of short texts already encoded (queries, interests), least recently used dropped."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._vectors: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    def encode(self, encoder: Encoder, texts: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, row in zip(missing, encoder.encode(missing), strict=True):
                self._vectors[text] = tuple(float(x) for x in row)
        for text in texts:
            self._vectors.move_to_end(text)
        while len(self._vectors) > self._size:
            self._vectors.popitem(last=False)
        return tuple(self._vectors[t] for t in texts)


def register(
    broker: RedisBroker,
    *,
    encoder: Encoder,
    store: VectorStore,
    metrics: Metrics,
    consumer: StreamConsumer,
    batch_size: int,
) -> None:
    embedded = broker.publisher(stream=streams.PAPERS_EMBEDDED)
    cache = QueryCache()

    # Entries that are not a PaperIngested are dead-lettered one by one; the batch goes on.
    @consumer.handler(streams.PAPERS_INGESTED, max_records=batch_size)
    async def on_papers_ingested(papers: list[PaperIngested]) -> None:
        # Idempotent: text already embedded (same content hash) is stored again, never re-encoded.
        events = await asyncio.to_thread(embed_papers, papers, encoder, store, metrics)
        for event in events:
            await embedded.publish(event)

    @consumer.requests(streams.TEXTS_TO_ENCODE)
    async def on_texts_to_encode(request: TextsToEncode) -> TextsEncoded:
        vectors = await asyncio.to_thread(cache.encode, encoder, request.texts)
        return TextsEncoded(model=encoder.name, vectors=vectors)
