"""Writes papers into a Qdrant Edge data dir as embed does, for the fault tests:
``python -m tests.faults.edge_writer DIR PAPERS BATCH``.

Test-only. It upserts ``PAPERS`` papers (384-d vectors from ``paper_vectors``, seeded) through
the real ``QdrantEdgeStore``, ``BATCH`` at a time, and says on stdout what happened, one line each:
``upserted N`` once an upsert of the first N papers has returned, ``optimizing`` just before the
store calls the shard's ``optimize()`` and ``optimized`` once it has returned. ``optimize()`` runs
after every upsert and returns at once unless a segment is due, so a test that sees
``optimizing`` stand for a while knows the shard is rewriting segments, and kills the process then.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from paperwire_shared.vectors import QdrantEdgeStore, StoredPaper

DIM = 384


def paper_vectors(n: int) -> np.ndarray:
    rows = np.random.default_rng(7).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def paper_id(i: int) -> str:
    return f"2601.{i:05d}"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Telling:
    """The real shard, saying when its ``optimize()`` starts and ends."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard

    def optimize(self) -> Any:
        say("optimizing")
        done = self._shard.optimize()
        say("optimized")
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


class TellingStore(QdrantEdgeStore):
    def _live(self) -> Any:
        shard = super()._live()
        return None if shard is None else _Telling(shard)


def main() -> None:
    folder, papers, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    vectors = paper_vectors(papers)
    store = TellingStore(folder)
    for start in range(0, papers, batch):
        end = min(start + batch, papers)
        store.upsert(
            [
                StoredPaper(
                    paper_id(i), {"title": f"Paper {i}", "embedded_at": float(i)}, vectors[i]
                )
                for i in range(start, end)
            ]
        )
        say(f"upserted {end}")
    store.close()
    say("closed")


if __name__ == "__main__":
    main()
