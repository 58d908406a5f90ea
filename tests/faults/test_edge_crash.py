"""Qdrant Edge killed while it rewrites segments (``optimize()``) loses no paper written."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from paperwire_shared.vectors import QdrantEdgeStore, StoredPaper
from tests.faults.edge_writer import paper_id, paper_vectors

REPO = Path(__file__).resolve().parents[2]
PAPERS, BATCH = 12_000, 200  # a segment is due for indexing every ~4,000 384-d papers
# optimize() returns in ~0.01 ms unless a segment is due; one that is due takes 0.1-1 s.
BUSY = 0.05


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def kill_while_optimizing(folder: Path) -> tuple[int, list[str]]:
    """Run the writer, kill it (SIGKILL) once an ``optimize()`` has run for ``BUSY`` seconds.
    Returns the papers whose upsert had returned, and what the writer said after the kill."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.edge_writer", str(folder), str(PAPERS), str(BATCH)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = lines_of(writer)
    written, optimizing = 0, False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=BUSY if optimizing else 10)
            except queue.Empty:
                if optimizing:
                    writer.send_signal(signal.SIGKILL)
                    break
                continue
            if line is None:
                raise AssertionError("the writer ended before any optimize() was due")
            optimizing = line == "optimizing"
            if line.startswith("upserted "):
                written = int(line.split()[1])
        else:
            raise AssertionError("no optimize() came due in 120 s")
    finally:
        writer.kill()
        writer.wait(timeout=30)
    after = []
    while (line := lines.get(timeout=10)) is not None:
        after.append(line)
    return written, after


def test_edge_killed_while_optimizing_keeps_every_paper_written_and_goes_on(tmp_path: Path):
    written, after = kill_while_optimizing(tmp_path)
    assert "optimized" not in after[:1], "the kill came after optimize() had returned"
    assert 0 < written < PAPERS
    vectors = paper_vectors(PAPERS)

    store = QdrantEdgeStore(tmp_path)
    try:
        # The batch in flight was applied before optimize() began: Edge writes its WAL first.
        held = written + BATCH
        assert store.count() == held
        # Nothing of the segment optimize() was building is left in its temp_segments.
        assert not list(tmp_path.rglob("temp_segments/*"))
        sample = [int(i) for i in np.random.default_rng(1).choice(held, 50, replace=False)]
        found = {p.paper_id: p for p in store.get([paper_id(i) for i in sample], with_vectors=True)}
        for i in sample:
            vector = found[paper_id(i)].vector
            assert vector is not None
            np.testing.assert_allclose(vector, vectors[i], atol=1e-6)
        for i in sample[:10]:
            nearest = np.argsort(-(vectors[:held] @ vectors[i]))[:10]
            hits = store.search(vectors[i], 10, with_payload=False)
            assert [h.paper_id for h in hits] == [paper_id(int(j)) for j in nearest]

        # And it goes on: the next papers are written and indexed as usual.
        more = range(held, PAPERS)
        for start in range(more.start, more.stop, BATCH):
            store.upsert(
                [
                    StoredPaper(paper_id(i), {"title": f"Paper {i}"}, vectors[i])
                    for i in range(start, min(start + BATCH, PAPERS))
                ]
            )
        assert store.count() == PAPERS
        shard = store._live()
        assert shard is not None and shard.info().indexed_vectors_count > 0
    finally:
        store.close()
    reopened = QdrantEdgeStore(tmp_path)
    try:
        assert reopened.count() == PAPERS
    finally:
        reopened.close()
