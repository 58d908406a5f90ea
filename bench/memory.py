"""Memory: peak resident set (VmHWM) of each service, each in its own process, with 100k papers.

Each service runs as production runs it (``paperwire run SERVICE``; recommend through
``bench.serve`` for its stand-in text encoder) and does its own work at that scale:
- ingest imports a 100k-paper file dropped in its inbox;
- embed loads the real model (torch, then OpenVINO), opens a 100k-point Qdrant Edge shard and
  embeds 64 new papers;
- recommend opens the same 100k papers and 10k users and serves recommendations to 32 clients;
- notify sends 300 digests of 10 papers to a local SMTP sink (its memory does not grow with papers).
The baseline is the same process idle, just after it answered its first ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from bench import corpus, load
from bench.latency import NEAREST_DONE
from bench.pipeline import write_papers
from bench.report import Part

log = logging.getLogger(__name__)

EMBED_PAPERS = 64
DIGESTS = 300


@contextlib.asynccontextmanager
async def service(
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    process = load.spawn(command, env, logs / f"{name}.log")
    try:
        await load.wait_until_up(port, process, timeout=180)
        yield process
    except Exception:
        log.error("%s log:\n%s", name, (logs / f"{name}.log").read_text()[-4000:])
        raise
    finally:
        load.stop(process)


async def _wait_len(client: aioredis.Redis, stream: str, n: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while (length := await client.xlen(stream)) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{stream} reached {length} of {n} entries in {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def measure(
    part: Part,
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    logs: Path,
    work: Callable[[], Awaitable[str]],
) -> None:
    async with service(name, command, env, port, logs) as process:
        idle = load.rss_mib(process.pid)
        started = time.perf_counter()
        what = await work()
        seconds = time.perf_counter() - started
        peak = load.peak_rss_mib(process.pid)
    part.add(
        f"{name}: {what}",
        peak,
        "MiB",
        baseline="idle after start",
        baseline_value=idle,
        note=f"{seconds:.0f} s",
    )


async def run(part: Part, *, papers: int = 100_000, users: int = 10_000) -> None:
    from faststream.redis import RedisBroker

    from paperwire import stack
    from paperwire_shared import streams
    from paperwire_shared.events import DigestDue, RankedPaper

    ds = corpus.shared_dataset(papers, users, 50)
    cli = [load.python(), "-m", "paperwire", "run"]
    with tempfile.TemporaryDirectory(prefix="paperwire-bench-") as tmp:
        root = Path(tmp)
        valkey = stack.start_valkey(root / "valkey")
        redis_url = stack.valkey_url(valkey)
        client = aioredis.from_url(redis_url)
        sink = stack.start_smtp_sink(root / "outbox")
        try:
            # ingest: a 100k-paper file through the inbox.
            port = stack.free_port()
            data = root / "ingest"
            staged = root / "papers.jsonl.gz"
            write_papers(staged, corpus.read_records(papers))

            async def ingest_file() -> str:
                (data / "inbox").mkdir(parents=True, exist_ok=True)
                staged.rename(data / "inbox" / staged.name)
                await _wait_len(client, streams.PAPERS_INGESTED, papers, timeout=600)
                return f"imports a {papers:,}-paper file"

            env = {
                "REDIS_URL": redis_url,
                "PAPERWIRE_DATA_DIR": str(data),
                "INGEST_PORT": str(port),
                "INGEST_INBOX_POLL_SECONDS": "0.5",
            }
            await measure(part, "ingest", [*cli, "ingest"], env, port, root, ingest_file)
            await client.flushall()

            # embed: the real model over a 100k-point shard, 64 new papers, with each backend.
            fresh = corpus.read_records(EMBED_PAPERS, skip=papers % 74_000)
            now = datetime.now(UTC)
            for backend in ("torch", "openvino"):
                port = stack.free_port()

                async def embed_papers(backend: str = backend) -> str:
                    async with RedisBroker(redis_url) as broker:
                        for record in fresh:
                            # New ids for each run: a paper already embedded is not encoded again.
                            paper = corpus.event(record, now).model_copy(
                                update={"paper_id": f"bench-{backend}-{record['id']}"}
                            )
                            await broker.publish(paper, stream=streams.PAPERS_INGESTED)
                    await _wait_len(client, streams.PAPERS_EMBEDDED, EMBED_PAPERS, timeout=600)
                    return (
                        f"EMBED_BACKEND={backend}, {papers:,}-point shard, "
                        f"embeds {EMBED_PAPERS} papers"
                    )

                env = {
                    "REDIS_URL": redis_url,
                    "PAPERWIRE_DATA_DIR": str(ds.data_dir),
                    "EMBED_PORT": str(port),
                    "EMBED_BACKEND": backend,
                }
                await measure(part, "embed", [*cli, "embed"], env, port, root, embed_papers)
                await client.flushall()

            # recommend: 100k papers, 10k users, 32 clients for 10 s.
            port = stack.free_port()
            key = secrets.token_hex(24)

            async def recommend_load() -> str:
                first = await load.one_request(
                    port,
                    f"/v1/users/{ds.user_ids[0]}/recommendations",
                    [("Authorization", f"Bearer {key}")],
                )
                part.note(f"recommend's first recommendation after start took {first:.1f} s")
                result = await load.closed_loop(
                    port,
                    load.picker(ds.user_ids, "/v1/users/{}/recommendations"),
                    clients=32,
                    seconds=10,
                    warmup=0,
                    headers=[("Authorization", f"Bearer {key}")],
                )
                if result.errors:
                    part.note(f"recommend answered {result.statuses} under load")
                # The peak includes the background pass over every stored paper (latency.py).
                waited = await load.wait_for_metric(port, NEAREST_DONE)
                part.note(f"recommend's nearest-papers pass ended {waited:.0f} s after the load")
                return f"{papers:,} papers, {users:,} users, {len(result.latencies)} requests"

            env = {
                "REDIS_URL": redis_url,
                "PAPERWIRE_DATA_DIR": str(ds.data_dir),
                "PAPERWIRE_API_HOST": "127.0.0.1",
                "PAPERWIRE_API_PORT": str(port),
                "PAPERWIRE_API_KEY": key,
                # One key drives all the load: the limiter still runs on every request, out of reach.
                "RECOMMEND_RATE_LIMIT": "100000000/minute",
            }
            serve = [load.python(), "-m", "bench.serve", "recommend"]
            await measure(part, "recommend", serve, env, port, root, recommend_load)
            await client.flushall()

            # notify: 300 digests to the SMTP sink.
            port = stack.free_port()
            records = corpus.read_records(DIGESTS)

            async def send_digests() -> str:
                async with RedisBroker(redis_url) as broker:
                    for n in range(DIGESTS):
                        picked = [records[(n + j) % DIGESTS] for j in range(10)]
                        digest = DigestDue(
                            digest_key=f"bench-user-{n}/2026-01-01",
                            user_id=f"bench-user-{n}",
                            email=f"user{n}@bench.example.org",
                            papers=tuple(
                                RankedPaper(
                                    paper_id=r["id"],
                                    title=r["title"],
                                    abstract=r["abstract"],
                                    url=f"https://arxiv.org/abs/{r['id']}",
                                    score=0.5,
                                    reason='matches your interest "benchmarks"',
                                )
                                for r in picked
                            ),
                            created_at=datetime.now(UTC),
                        )
                        await broker.publish(digest, stream=streams.DIGESTS_DUE)
                deadline = time.perf_counter() + 600
                while len(list((root / "outbox" / "new").iterdir())) < DIGESTS:
                    if time.perf_counter() > deadline:
                        raise TimeoutError("notify did not send every digest in time")
                    await asyncio.sleep(0.2)
                return f"sends {DIGESTS} digests of 10 papers"

            env = {
                "REDIS_URL": redis_url,
                "SMTP_URL": stack.smtp_sink_url(sink),
                "PAPERWIRE_DATA_DIR": str(root / "notify"),
                "NOTIFY_PORT": str(port),
            }
            (root / "notify").mkdir()
            await measure(part, "notify", [*cli, "notify"], env, port, root, send_digests)
        finally:
            await client.aclose()
            sink.stop()
            valkey.stop()
    size = papers * corpus.DIM * 4 / 2**20
    part.note(
        f"for scale: {papers:,} float32 384-d vectors are {size:.0f} MiB; the Qdrant Edge shard "
        "is memory-mapped, so its pages count in RSS once touched"
    )
    part.note(
        "single-node mode (`paperwire run`) runs all four in one process: one interpreter and "
        "one shared vector store instead of four"
    )
