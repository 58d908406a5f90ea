"""embed: PaperIngested in, one vector per distinct text, PaperEmbedded out."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_embed.app import create_app
from paperwire_embed.config import Settings
from paperwire_shared import streams
from paperwire_shared.events import PaperEmbedded, PaperIngested, TextsEncoded, TextsToEncode
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder

NOW = datetime(2026, 11, 27, 8, tzinfo=UTC)


def paper(paper_id: str = "2503.11731", abstract: str = "We splat Gaussians.", version: int = 1):
    return PaperIngested(
        paper_id=paper_id,
        source="file",
        title=f"Paper {paper_id}",
        abstract=abstract,
        published=date(2025, 3, 18),
        version=version,
        ingested_at=NOW,
    )


@pytest.fixture
def harness(tmp_path: Path):
    broker = RedisBroker()
    encoder = HashingEncoder()
    store = QdrantEdgeStore(tmp_path / "qdrant")
    app = create_app(
        Settings(redis_url="redis://unused", data_dir=tmp_path),
        broker=broker,
        encoder=encoder,
        store=store,
        ensure_groups=False,
    )
    embedded: list[PaperEmbedded] = []
    dead: list[dict] = []

    @broker.subscriber(stream=streams.PAPERS_EMBEDDED)
    async def collect(event: PaperEmbedded) -> None:
        embedded.append(event)

    @broker.subscriber(stream=streams.DEAD_LETTERS)
    async def collect_dead(entry: dict) -> None:
        dead.append(entry)

    yield app, broker, encoder, store, embedded, dead
    store.close()


async def test_paper_seen_twice_is_embedded_once(harness):
    _, broker, encoder, store, embedded, _ = harness
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(), stream=streams.PAPERS_INGESTED)
        await br.publish(paper(), stream=streams.PAPERS_INGESTED)
    assert sum(encoder.calls) == 1
    assert store.count() == 1
    # Both deliveries are acknowledged downstream: consumers of PaperEmbedded are idempotent.
    assert [e.paper_id for e in embedded] == ["2503.11731", "2503.11731"]


async def test_new_version_with_new_text_is_embedded_again_and_keeps_its_first_sight(harness):
    _, broker, encoder, store, _, _ = harness
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(), stream=streams.PAPERS_INGESTED)
        first = store.get(["2503.11731"])[0].payload["embedded_at"]
        await br.publish(paper(abstract="Revised.", version=2), stream=streams.PAPERS_INGESTED)
    [stored] = store.get(["2503.11731"])
    assert sum(encoder.calls) == 2
    assert store.count() == 1
    assert stored.payload["version"] == 2 and stored.payload["abstract"] == "Revised."
    assert stored.payload["embedded_at"] == first


async def test_stored_payload_carries_what_readers_filter_on(harness):
    _, broker, _, store, _, _ = harness
    async with TestRedisBroker(broker) as br:
        await br.publish(paper(), stream=streams.PAPERS_INGESTED)
    [stored] = store.get(["2503.11731"], with_vectors=True)
    assert stored.payload["published_ts"] == datetime(2025, 3, 18, tzinfo=UTC).timestamp()
    assert stored.payload["model"] == HashingEncoder.name
    assert stored.vector is not None and abs(float(stored.vector @ stored.vector) - 1) < 1e-5


async def test_invalid_entry_is_dead_lettered_and_the_rest_goes_through(harness):
    _, broker, _, store, embedded, dead = harness
    async with TestRedisBroker(broker) as br:
        await br.publish({"paper_id": "x", "title": ""}, stream=streams.PAPERS_INGESTED)
        await br.publish(paper("2503.00001"), stream=streams.PAPERS_INGESTED)
    assert store.count() == 1
    assert [e.paper_id for e in embedded] == ["2503.00001"]
    assert len(dead) == 1 and dead[0]["stream"] == streams.PAPERS_INGESTED
    assert dead[0]["entry"] == {"paper_id": "x", "title": ""}


async def test_texts_are_encoded_on_request_and_the_same_text_only_once(harness):
    _, broker, encoder, _, _, _ = harness
    async with TestRedisBroker(broker) as br:
        request = TextsToEncode(texts=("low-rank adapters", "low-rank adapters"))
        reply = await br.request(request, stream=streams.TEXTS_TO_ENCODE)
        again = await br.request(request, stream=streams.TEXTS_TO_ENCODE)
    encoded = TextsEncoded.model_validate(await reply.decode())
    assert len(encoded.vectors) == 2 and encoded.vectors[0] == encoded.vectors[1]
    assert TextsEncoded.model_validate(await again.decode()) == encoded
    assert sum(encoder.calls) == 1
