"""Scale-out: three embed workers, each its own process, in one consumer group.

What Kubernetes (KEDA) does when it adds embed replicas, on one machine: the workers share the
group's entries, so each paper is embedded by exactly one of them and every worker does a share.
Each worker keeps its own Qdrant Edge dir (one process per dir; no Qdrant server here), so the
union of the three stores shows who embedded what. The hashing stand-in encoder replaces the
model (tests/support/run_service.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from faststream.redis import RedisBroker
from prometheus_client.parser import text_string_to_metric_families

from paperwire.stack import free_port
from paperwire_shared import streams
from paperwire_shared.events import PaperIngested
from paperwire_shared.vectors import QdrantEdgeStore

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
PAPERS = 1_000


def paper(n: int) -> PaperIngested:
    return PaperIngested(
        paper_id=f"2611.{n:05d}",
        source="file",
        title=f"Paper {n} on topic {n % 17}",
        abstract=f"We study problem {n} with method {n % 11} and report result {n % 5}.",
        ingested_at=datetime.now(UTC),
    )


class Workers:
    """Embed processes on one Redis, each with its own port, consumer name and data dir."""

    def __init__(self, redis_url: str, root: Path) -> None:
        first = free_port(WORKERS)
        self.ports = [first + i for i in range(WORKERS)]
        self.data_dirs = [root / f"worker-{i}" for i in range(WORKERS)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for index, (port, data_dir) in enumerate(zip(self.ports, self.data_dirs, strict=True)):
            env = {
                **os.environ,
                "REDIS_URL": redis_url,
                "PAPERWIRE_DATA_DIR": str(data_dir),
                "EMBED_CONSUMER": f"worker-{index}",
                # Small reads, so the backlog is handed out in many pieces.
                "EMBED_BATCH_SIZE": "16",
            }
            command = [sys.executable, "-m", "tests.support.run_service", "embed"]
            # A file, not a pipe: FastStream logs every entry, and a full pipe would block it.
            self.logs.append(root / f"worker-{index}.log")
            with self.logs[-1].open("wb") as log:
                self.procs.append(
                    subprocess.Popen([*command, "--port", str(port)], cwd=ROOT, env=env, stderr=log)
                )

    def wait_ready(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        for proc, port, log in zip(self.procs, self.ports, self.logs, strict=True):
            while not _ready(port):
                if proc.poll() is not None:
                    raise AssertionError(f"worker on {port} exited: {log.read_text()[-2000:]}")
                assert time.monotonic() < deadline, f"worker on {port} never became ready"
                time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(embedded_valkey_url: str, tmp_path: Path) -> Iterator[Workers]:
    redis.from_url(embedded_valkey_url).flushdb()
    started = Workers(embedded_valkey_url, tmp_path)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def embedded_by(port: int) -> float:
    """The worker's own count of papers it ran through the encoder, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "paperwire_papers_embedded_total":
                return sample.value
    raise AssertionError("paperwire_papers_embedded_total is not exported")


async def publish(url: str, papers: list[PaperIngested]) -> None:
    broker = RedisBroker(url)
    await broker.connect()
    try:
        for item in papers:
            await broker.publish(item, stream=streams.PAPERS_INGESTED)
    finally:
        await broker.stop()


def wait_until_done(url: str, timeout: float = 40) -> None:
    """Until the group has read and acknowledged everything and every event is out."""
    client = redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = client.xinfo_groups(streams.PAPERS_INGESTED)
        embed = next(g for g in groups if g["name"].decode() == streams.EMBED_GROUP)
        done = client.xlen(streams.PAPERS_EMBEDDED) >= PAPERS
        if done and embed["lag"] == 0 and embed["pending"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"not done in {timeout} s: {client.xinfo_groups(streams.PAPERS_INGESTED)}")


def test_three_workers_in_one_group_embed_each_paper_once_and_each_does_a_share(
    workers: Workers, embedded_valkey_url: str
) -> None:
    papers = [paper(n) for n in range(PAPERS)]
    asyncio.run(publish(embedded_valkey_url, papers))
    wait_until_done(embedded_valkey_url)

    # Each worker's own count of papers it put through the encoder.
    shares = [embedded_by(port) for port in workers.ports]
    print(f"papers embedded per worker: {shares}")
    assert sum(shares) == PAPERS, shares
    assert all(share > 0 for share in shares), shares
    # One PaperEmbedded per paper, none twice.
    assert redis.from_url(embedded_valkey_url).xlen(streams.PAPERS_EMBEDDED) == PAPERS

    # Each Edge dir opens once its worker is gone: the stores split the papers between them.
    workers.stop()
    ids = [p.paper_id for p in papers]
    stored = []
    for data_dir in workers.data_dirs:
        store = QdrantEdgeStore(data_dir / "qdrant")
        try:
            stored.append({s.paper_id for s in store.get(ids)})
        finally:
            store.close()
    assert sum(len(s) for s in stored) == PAPERS, [len(s) for s in stored]
    assert set().union(*stored) == set(ids)
    assert [len(s) for s in stored] == shares
