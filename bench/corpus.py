"""Benchmark data: real arXiv titles and abstracts, stand-in vectors, synthetic users.

Papers come from ``../shared/data/arxiv-cs-2025.jsonl.gz`` (74,728 real cs papers); beyond that the
corpus repeats them under new ids. Vectors are stand-ins: random unit vectors around 256 random
topic centres, so cosines look like a real model's (~0.4 within a topic, ~0 across) and a
``min_score`` of 0.2 keeps some papers and drops most, as it does with all-MiniLM-L6-v2.
"""

from __future__ import annotations

import atexit
import gzip
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from paperwire_shared.events import PaperIngested

REPO = Path(__file__).resolve().parents[1]
DATA_FILE = REPO.parent / "shared" / "data" / "arxiv-cs-2025.jsonl.gz"
DIM = 384  # all-MiniLM-L6-v2
TOPICS = 256
# Noise scales: cos(paper, topic centre) ~0.6, cos(interest, topic centre) ~0.7.
_PAPER_NOISE = 1.3
_INTEREST_NOISE = 1.0
MODEL_NAME = "all-MiniLM-L6-v2"


def read_records(n: int, skip: int = 0) -> list[dict[str, Any]]:
    """``n`` records of the arXiv file after the first ``skip``; repeated when the file runs out."""
    if not DATA_FILE.exists():
        raise SystemExit(f"benchmark data not found: {DATA_FILE}")
    out: list[dict[str, Any]] = []
    lap = 0
    while len(out) < n:
        with gzip.open(DATA_FILE, "rt", encoding="utf-8") as lines:
            start = skip if lap == 0 else 0
            for line in itertools.islice(lines, start, start + n - len(out)):
                record = json.loads(line)
                if lap:
                    record["id"] = f"{record['id']}-{lap}"
                out.append(record)
        lap += 1
    return out


def text_of(record: dict[str, Any]) -> str:
    """What embed encodes: the same text ``PaperIngested.text`` gives."""
    return f"{record['title']}\n{record['abstract']}" if record.get("abstract") else record["title"]


def event(record: dict[str, Any], now: datetime) -> PaperIngested:
    return PaperIngested(
        paper_id=record["id"],
        source="file",
        title=record["title"],
        abstract=record.get("abstract") or "",
        authors=tuple(record.get("authors") or ()),
        categories=tuple(record.get("categories") or ()),
        published=record.get("published"),
        url=f"https://arxiv.org/abs/{record['id']}",
        ingested_at=now,
    )


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class VectorSpace:
    """Topic centres shared by the papers and the users of one benchmark, from a fixed seed."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = _unit(self.rng.standard_normal((TOPICS, DIM)))

    def around(self, topics: np.ndarray, noise: float) -> np.ndarray:
        jitter = self.rng.standard_normal((len(topics), DIM)) * (noise / np.sqrt(DIM))
        return _unit(self.centres[topics] + jitter)

    def papers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(topic per paper, unit vectors)``."""
        topics = self.rng.integers(0, TOPICS, n)
        return topics, self.around(topics, _PAPER_NOISE)

    def interests(self, topics: np.ndarray) -> np.ndarray:
        return self.around(topics, _INTEREST_NOISE)


@dataclass(frozen=True)
class BenchUser:
    """A synthetic user: one to three interests, each a text (with its cached vector) and seeds."""

    email: str
    interests: list[dict[str, Any]]  # {"name", "text", "seed_paper_ids", "vector", "topic"}


def make_users(
    space: VectorSpace,
    n: int,
    records: list[dict[str, Any]],
    paper_ids: list[str],
    paper_topics: np.ndarray,
    *,
    seeds_per_interest: int = 0,
    seeded_share: float = 0.3,
) -> list[BenchUser]:
    """``n`` users whose interests sit on random topics; interest texts are real paper titles.

    ``seeded_share`` of the interests also name 1-5 seed papers of their topic (or exactly
    ``seeds_per_interest`` when given: a user importing a library).
    """
    rng = space.rng
    by_topic: dict[int, list[int]] = {}
    for i, t in enumerate(paper_topics):
        by_topic.setdefault(int(t), []).append(i)
    users = []
    counts = rng.integers(1, 4, n)
    topics = rng.integers(0, TOPICS, int(counts.sum()))
    vectors = space.interests(topics)
    titles = rng.integers(0, len(records), len(topics))
    k = 0
    for u in range(n):
        interests = []
        for j in range(int(counts[u])):
            topic = int(topics[k])
            pool = by_topic.get(topic, [0])
            if seeds_per_interest:
                n_seeds = seeds_per_interest
            else:
                n_seeds = int(rng.integers(1, 6)) if rng.random() < seeded_share else 0
            picks = rng.choice(pool, size=min(n_seeds, len(pool)), replace=False) if n_seeds else []
            interests.append(
                {
                    "name": f"interest {j + 1}",
                    "text": " ".join(records[int(titles[k])]["title"].split()[:12]),
                    "seed_paper_ids": [paper_ids[int(i)] for i in picks],
                    "vector": [float(x) for x in vectors[k]],
                    "topic": topic,
                }
            )
            k += 1
        users.append(BenchUser(f"user{u}@bench.example.org", interests))
    return users


def stored_papers(
    records: list[dict[str, Any]], vectors: np.ndarray, now: datetime
) -> Iterator[Any]:
    """What embed would store for each record: its payload (``payload_for``) and vector."""
    from paperwire_embed.planning import payload_for
    from paperwire_shared.vectors import StoredPaper

    for record, vector in zip(records, vectors, strict=True):
        paper = event(record, now)
        yield StoredPaper(paper.paper_id, payload_for(paper, MODEL_NAME, now, None), vector)


def fill_vector_store(
    path: Path, records: list[dict[str, Any]], vectors: np.ndarray, gap_days: int = 0
) -> float:
    """Qdrant Edge under ``path`` holding every record; returns the seconds it took.

    ``embedded_at`` goes back 2,000 papers a day, so "today's papers" are the last 2,000
    records, as in a real deployment's store; the older ones are ``gap_days`` further back.
    """
    from paperwire_shared.vectors import QdrantEdgeStore

    started = time.perf_counter()
    store = QdrantEdgeStore(path)
    # The day's papers arrived a few minutes ago: recommend keeps no answer while papers embedded
    # in the last minute may still be on their way (recommender.Answers.CLOCK_SLACK).
    today = datetime.now(UTC) - timedelta(minutes=5)
    try:
        batch: list[Any] = []
        n = len(records)
        for i, paper in enumerate(stored_papers(records, vectors, today)):
            days_ago = (n - 1 - i) // 2_000
            days_ago += gap_days if days_ago else 0
            paper.payload["embedded_at"] = (today - timedelta(days=days_ago)).timestamp()
            batch.append(paper)
            if len(batch) == 2_000:
                store.upsert(batch)
                batch = []
        store.upsert(batch)
    finally:
        store.close()
    return time.perf_counter() - started


def fill_users(db_path: Path, users: list[BenchUser], frequency: str = "daily") -> float:
    """The users in recommend's SQL store at ``db_path``, through recommend's own ``Store``.

    Built on tmpfs then copied: SQLite syncs every commit, and one commit per user on this disk
    runs at ~70 users/s.
    """
    from paperwire_recommend.store import Interest, Store

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=fast_tmp()) as tmp:
        scratch = Path(tmp) / "users.db"
        store = Store(f"sqlite:///{scratch}")
        now = datetime.now(UTC)
        try:
            for user in users:
                interests = [
                    Interest(i["name"], i["text"], list(i["seed_paper_ids"]), i["vector"])
                    for i in user.interests
                ]
                store.create_user(user.email, frequency, 10, interests, now)
        finally:
            store.close()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch, db_path)
    return time.perf_counter() - started


def fast_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Dataset:
    """A recommend data dir (Qdrant Edge + SQLite) and what the benchmarks need to query it."""

    data_dir: Path
    paper_ids: list[str]
    paper_vectors: np.ndarray
    user_ids: list[str]  # typical users: 1-3 interests
    library_user_ids: list[str]  # users with a 200-paper library as seeds
    users: dict[str, BenchUser]
    seconds: float


def build_dataset(
    data_dir: Path, papers: int, users: int, library_users: int = 0, library_size: int = 200
) -> Dataset:
    """``papers`` stored papers and ``users`` users (plus ``library_users``) under ``data_dir``."""
    from paperwire_recommend.store import Store

    started = time.perf_counter()
    space = VectorSpace(0)
    records = read_records(papers)
    topics, vectors = space.papers(papers)
    ids = [r["id"] for r in records]
    fill_vector_store(data_dir / "qdrant", records, vectors)
    typical = make_users(space, users, records, ids, topics)
    library = make_users(
        space, library_users, records, ids, topics, seeds_per_interest=library_size
    )
    for n, user in enumerate(library):
        library[n] = BenchUser(f"library{n}@bench.example.org", user.interests[:1])
    # "off": the scheduler has nothing to send, so it cannot compete with the measured requests.
    fill_users(data_dir / "paperwire.db", typical + library, frequency="off")
    store = Store(f"sqlite:///{data_dir / 'paperwire.db'}")
    try:
        found = {u.email: u.id for u in store.list_users(len(typical) + len(library) + 1, 0)}
    finally:
        store.close()
    by_id = {found[u.email]: u for u in typical + library}
    return Dataset(
        data_dir=data_dir,
        paper_ids=ids,
        paper_vectors=vectors,
        user_ids=[found[u.email] for u in typical],
        library_user_ids=[found[u.email] for u in library],
        users=by_id,
        seconds=time.perf_counter() - started,
    )


_DATASETS: dict[tuple[int, int, int], Dataset] = {}


def shared_dataset(papers: int, users: int, library_users: int = 0) -> Dataset:
    """One dataset per size for the whole benchmark run (building 100k papers takes ~1 min).

    Parts use it one after another, never at once: Qdrant Edge opens a data dir in one process.
    """
    key = (papers, users, library_users)
    if key not in _DATASETS:
        tmp = tempfile.TemporaryDirectory(prefix="paperwire-bench-data-")
        atexit.register(tmp.cleanup)
        _DATASETS[key] = build_dataset(Path(tmp.name), papers, users, library_users)
    return _DATASETS[key]
