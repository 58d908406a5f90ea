"""Pipeline overhead: papers/s from a file dropped in ingest's inbox to vectors stored by embed.

The real ingest and embed apps run in-process (as ``paperwire run`` runs them) on embedded Valkey
and Qdrant Edge, with the model replaced by a stand-in encoder. The baseline is a bare loop on the
same server doing the same stream work with nothing else: XADD, XREADGROUP (batches of the embed
batch size), XADD of the result, XACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from bench import corpus
from bench.report import Part

log = logging.getLogger(__name__)

TARGET_RATE = 2_000  # papers/s
POLL_S = 0.02


class FreeEncoder:
    """Costs nothing: precomputed unit vectors, to show the pipeline's own overhead alone."""

    name = "free-stand-in"

    def __init__(self, dim: int = corpus.DIM) -> None:
        self._rows = corpus.VectorSpace(1).papers(4_096)[1]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._rows[np.arange(len(texts)) % len(self._rows)]


def write_papers(path: Path, records: list[dict[str, Any]]) -> None:
    keep = ("id", "title", "abstract", "categories", "published")
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps({k: record[k] for k in keep if k in record}) + "\n")


@contextlib.asynccontextmanager
async def production_logging(path: Path) -> AsyncIterator[None]:
    """INFO to a file, as ``paperwire run`` logs at INFO: per-batch log lines cost time too."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    level, others = root.level, root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    # FastStream's loggers get their own console handler when a broker starts: what they print
    # goes to the file too, so the benchmark's output stays readable.
    # FastStream's loggers have console handlers of their own: they write to the file too.
    import faststream  # noqa: F401 - creates its loggers, so their handlers can be found

    streams = []
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("faststream"):
            for each in logging.getLogger(name).handlers:
                if isinstance(each, logging.StreamHandler) and each is not handler:
                    streams.append((each, each.stream))
    console = path.with_suffix(".console").open("w")
    try:
        for each, _ in streams:
            each.setStream(console)
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            yield
    finally:
        for each, stream in streams:
            each.setStream(stream)
        console.close()
        root.handlers = others
        root.setLevel(level)
        handler.close()


async def _wait_len(client: aioredis.Redis, stream: str, n: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while (length := await client.xlen(stream)) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{stream} reached {length} of {n} entries in {timeout:.0f} s")
        await asyncio.sleep(POLL_S)
    return time.perf_counter()


async def through_services(
    redis_url: str, work: Path, staged: Path, n: int, encoder: Any
) -> tuple[float, float]:
    """(ingest rate, end-to-end rate) in papers/s for one file of ``n`` papers."""
    from paperwire_embed.app import create_app as embed_app
    from paperwire_embed.config import Settings as EmbedSettings
    from paperwire_ingest.app import create_app as ingest_app
    from paperwire_ingest.config import Settings as IngestSettings
    from paperwire_shared import streams
    from paperwire_shared.vectors import QdrantEdgeStore

    store = QdrantEdgeStore(work / "qdrant")
    ingest = ingest_app(IngestSettings(redis_url=redis_url, data_dir=work, inbox_poll_seconds=0.05))
    embed = embed_app(
        EmbedSettings(redis_url=redis_url, data_dir=work), encoder=encoder, store=store
    )
    client = aioredis.from_url(redis_url)
    try:
        async with ingest.start_lifespan_context(), embed.start_lifespan_context():
            inbox = work / "inbox"
            inbox.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            staged.rename(inbox / staged.name)  # atomic: the poller never sees half a file
            ingested = await _wait_len(client, streams.PAPERS_INGESTED, n, timeout=300)
            stored = await _wait_len(client, streams.PAPERS_EMBEDDED, n, timeout=300)
        count = store.count()
        if count != n:
            raise RuntimeError(f"{count} vectors stored for {n} papers")
    finally:
        await client.aclose()
        store.close()
    return n / (ingested - started), n / (stored - started)


async def bare_loop(redis_url: str, bodies: list[bytes], batch: int) -> float:
    """papers/s of the stream work alone: produce, read in batches, re-publish, acknowledge."""
    source, sink, group = "bench.bare.in", "bench.bare.out", "bare"
    producer = aioredis.from_url(redis_url)
    consumer = aioredis.from_url(redis_url)
    await producer.xgroup_create(source, group, id="0", mkstream=True)
    n = len(bodies)

    async def produce() -> None:
        for start in range(0, n, 256):
            async with producer.pipeline(transaction=False) as pipe:
                for body in bodies[start : start + 256]:
                    pipe.xadd(source, {"data": body})
                await pipe.execute()

    async def consume() -> None:
        done = 0
        while done < n:
            reply = await consumer.xreadgroup(group, "c", {source: ">"}, count=batch, block=1000)
            for _, entries in reply:
                async with consumer.pipeline(transaction=False) as pipe:
                    for _, fields in entries:
                        pipe.xadd(sink, {"data": fields[b"data"]})
                    pipe.xack(source, group, *[entry_id for entry_id, _ in entries])
                    await pipe.execute()
                done += len(entries)

    try:
        started = time.perf_counter()
        await asyncio.gather(produce(), consume())
        return n / (time.perf_counter() - started)
    finally:
        await producer.aclose()
        await consumer.aclose()


async def run(part: Part, *, papers: int = 20_000, rounds: int = 2) -> None:
    from paperwire import stack
    from paperwire_embed.config import Settings as EmbedSettings
    from tests.fakes import HashingEncoder

    batch = EmbedSettings.model_fields["batch_size"].default
    records = corpus.read_records(papers)
    now = datetime.now(UTC)
    bodies = [corpus.event(r, now).model_dump_json().encode() for r in records]
    encoders = {
        "HashingEncoder (tests/fakes.py)": HashingEncoder(corpus.DIM),
        "free": FreeEncoder(),
    }
    best: dict[str, list[float]] = {"bare": [], **{name: [] for name in encoders}}
    ingest_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="paperwire-bench-") as tmp:
        root = Path(tmp)
        valkey = stack.start_valkey(root / "valkey")
        redis_url = stack.valkey_url(valkey)
        admin = aioredis.from_url(redis_url)
        try:
            async with production_logging(root / "services.log"):
                for r in range(rounds):
                    await admin.flushall()
                    best["bare"].append(await bare_loop(redis_url, bodies, batch))
                    for name, encoder in encoders.items():
                        await admin.flushall()
                        work = root / f"round{r}-{len(best[name])}"
                        work.mkdir()
                        staged = work / "papers.jsonl.gz"
                        write_papers(staged, records)
                        ingest_rate, rate = await through_services(
                            redis_url, work, staged, papers, encoder
                        )
                        best[name].append(rate)
                        ingest_rates.append(ingest_rate)
                        shutil.rmtree(work)
                    log.info("pipeline round %d/%d done", r + 1, rounds)
        finally:
            await admin.aclose()
            valkey.stop()
    bare = max(best["bare"])
    part.add(
        f"bare XADD/XREADGROUP(COUNT {batch})/XADD/XACK loop, same Valkey",
        bare,
        "papers/s",
        note="baseline",
    )
    for name in encoders:
        rate = max(best[name])
        ok = rate >= TARGET_RATE and rate >= bare / 2
        part.add(
            f"inbox file -> ingest -> embed -> Qdrant Edge, encoder: {name}",
            rate,
            "papers/s",
            baseline="bare loop",
            baseline_value=bare,
            target=f">= {TARGET_RATE:,}/s and >= 0.5x bare",
            met=ok,
        )
    part.add(
        "ingest alone (file to PAPERS_INGESTED, while embed runs)",
        max(ingest_rates),
        "papers/s",
        baseline="bare loop",
        baseline_value=bare,
    )
    part.note(
        f"{papers:,} real arXiv papers per run, best of {rounds} runs each, bare and services "
        "interleaved; embedded Valkey with AOF (everysec) as `paperwire run` starts it; services "
        "log at INFO to a file as `paperwire run` does"
    )
    part.note(
        "the services' time includes the inbox poller noticing the file (two polls 50 ms apart), "
        "parsing, de-duplication (Lua claim), validation, FastStream's envelope, the vector store "
        "round trips (get, then upsert) and the PaperEmbedded events"
    )
