"""The vector-collection contract and the store both embed (writes) and recommend (reads) use.

It lives in shared because two services use it and in single-node mode they must share one
instance: Qdrant Edge allows one process per data dir. Two real backends: a Qdrant server through
qdrant-client (``QDRANT_URL`` set) and embedded Qdrant Edge on disk (no URL).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import qdrant_edge as edge
from qdrant_client import QdrantClient, models

log = logging.getLogger(__name__)

COLLECTION = "papers"
# Point ids are derived from the stable paper id, so re-upserting a paper overwrites it.
_POINT_NAMESPACE = uuid.UUID("6f1c8a52-3b7e-4c55-9a8e-2d0f4e1b7c90")
# Looked up by value (paper_id) or range-filtered on every recommend query and catch-up scan.
_KEYWORD_FIELDS = ("paper_id",)
# ``updated_at``: every write sets it (``embedded_at`` keeps its first value), so readers that
# hold papers (recommend's catalogue) find the ones updated since they last looked.
_FLOAT_FIELDS = ("embedded_at", "published_ts", "updated_at")
# Papers per page of ``papers_since``.
PAGE = 2_000

# Qdrant Edge's index of a new shard: each full segment's vectors are also kept as int8 in memory
# (scalar quantisation: a search scans a quarter of the bytes, then rescores the best
# ``EDGE_OVERSAMPLING`` x k with the stored float32 vectors), with no HNSW graph (m=0; building
# one at 100k papers held the process for minutes). At 100k 384-d papers a search with 200 hits
# took 5.5 ms against 18.5 ms for the exact scan, the same 200 papers (bench/README.md).
# Edge builds that index only in ``optimize()``, which holds the GIL while it works, so segments
# stay small: an appendable segment is indexed once its vectors pass ``EDGE_INDEX_AFTER_KB``
# (~4,000 384-d papers), merged into the newest indexed segment until that passes
# ``EDGE_SEGMENT_KB`` (~26,000): each such ``optimize()`` took 0.3-0.9 s, and nothing otherwise.
EDGE_INDEX_AFTER_KB = 6_000
EDGE_SEGMENT_KB = 40_000
EDGE_OVERSAMPLING = 1.5


@functools.lru_cache(maxsize=200_000)
def point_id(paper_id: str) -> str:
    """Qdrant's id of a paper (a UUID derived from its id); cached: every request converts hundreds."""
    return str(uuid.uuid5(_POINT_NAMESPACE, paper_id))


@dataclass(frozen=True)
class StoredPaper:
    """A paper as stored: its payload and, when asked for, its unit-length vector.

    Payload keys written by embed: every ``PaperIngested`` field (JSON mode), plus
    ``content_hash``, ``model``, ``embedded_at`` (unix seconds) and ``published_ts`` (unix seconds
    of the published date, or of first sight when the source gives no date). Both timestamps are
    range-filterable.
    """

    paper_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    paper_id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None  # only when searched ``with_vectors``


class VectorStore(Protocol):
    def upsert(self, papers: Sequence[StoredPaper]) -> None:
        """Insert or overwrite; creates the collection from the first vector's size when missing."""

    def get(self, paper_ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPaper]:
        """The stored papers among ``paper_ids``, in the order asked; unknown ids are left out."""

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        published_since: float | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        """The ``k`` nearest papers by cosine, best first, skipping ``exclude`` (paper ids).
        ``with_payload=False``: each hit's payload holds only ``paper_id`` (Edge builds every
        field of 200 payloads in ~2.4 ms of a search)."""

    def embedded_since(self, since: float, limit: int) -> list[StoredPaper]:
        """Papers with ``embedded_at >= since`` (with vectors), at most ``limit``."""

    def papers_since(
        self, since: float, fields: Sequence[str] = (), page: int = PAGE
    ) -> Iterator[list[StoredPaper]]:
        """Every paper embedded or updated (``updated_at``) since ``since``, with its vector,
        ``page`` at a time and with only ``paper_id`` and ``fields`` of its payload: for work
        over all recent papers (100k vectors: ~4 s, ~200 MB at a time)."""

    def count(self) -> int: ...

    def ping(self) -> bool:
        """True when the backend answers (for readiness)."""

    def close(self) -> None: ...


def open_vector_store(url: str | None, path: Path) -> VectorStore:
    """Qdrant server at ``url`` when given, else Qdrant Edge on disk under ``path``."""
    if url:
        return QdrantServerStore(QdrantClient(url=url))
    return QdrantEdgeStore(path)


class VectorDirInUse(RuntimeError):
    """Another store (this process or another) holds the Qdrant Edge data dir."""


# What both backends share: the payload we write and the shapes we read back.


def _payload(paper: StoredPaper) -> dict[str, Any]:
    return {**paper.payload, "paper_id": paper.paper_id}


def _as_list(vector: Any) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()


def _array(vector: Any) -> np.ndarray | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def _stored(payload: dict[str, Any] | None, vector: Any) -> StoredPaper:
    payload = payload or {}
    return StoredPaper(paper_id=payload["paper_id"], payload=payload, vector=_array(vector))


def _hits(points: Iterable[Any]) -> list[Hit]:
    hits = []
    for p in points:
        payload = p.payload  # read once: Edge builds a new dict on every access
        if payload:
            hits.append(Hit(payload["paper_id"], p.score, payload, _array(p.vector)))
    return hits


# ``embedded_since`` reads papers by when they were first embedded; ``papers_since`` also by
# when they were last written.
_EMBEDDED = ("embedded_at",)
_CHANGED = ("embedded_at", "updated_at")


def _server_since(since: float, fields: Sequence[str] = _EMBEDDED) -> models.Filter:
    """Papers with any of ``fields`` at or after ``since`` (unix seconds), for a Qdrant server."""
    return models.Filter(
        should=[models.FieldCondition(key=f, range=models.Range(gte=since)) for f in fields]
    )


def _edge_since(since: float, fields: Sequence[str] = _EMBEDDED) -> edge.Filter:
    """Papers with any of ``fields`` at or after ``since`` (unix seconds), for Qdrant Edge."""
    return edge.Filter(
        should=[edge.FieldCondition(f, range=edge.RangeFloat(gte=since)) for f in fields]
    )


# ``QdrantEdgeStore.rebuild``: the new shard is built beside the old one, which is moved aside
# while they swap places.
_BUILDING = ".rebuilding"
_REPLACED = ".replaced"


def _new_edge_shard(shard_dir: Path, size: int) -> edge.EdgeShard:
    """An empty shard with this version's config (see ``EDGE_INDEX_AFTER_KB``) and indexes."""
    config = edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=size, distance=edge.Distance.Cosine),
        # Payloads in memory: a search's 200 payloads read from Edge's default (mmap, cold)
        # took ~25 ms at 100k papers, ~4 ms cached (bench/README.md).
        payload_memory=edge.Memory.Cached,
        quantization_config=edge.ScalarQuantizationConfig(
            edge.ScalarType.Int8, quantile=0.99, always_ram=True
        ),
        hnsw_config=edge.HnswIndexConfig(
            m=0, ef_construct=100, full_scan_threshold=10, payload_m=0
        ),
        optimizers=edge.EdgeOptimizersConfig(
            indexing_threshold=EDGE_INDEX_AFTER_KB, max_segment_size=EDGE_SEGMENT_KB
        ),
    )
    shard = edge.EdgeShard.create(str(shard_dir), config)
    _edge_indexes(shard)
    return shard


def _edge_indexes(shard: edge.EdgeShard) -> None:
    """Index the payload fields the shard does not index yet (all of them, new; those added
    since, one created by an earlier version)."""
    known = shard.info().payload_schema
    for names, kind in (
        (_KEYWORD_FIELDS, edge.PayloadSchemaType.Keyword),
        (_FLOAT_FIELDS, edge.PayloadSchemaType.Float),
    ):
        for name in names:
            if name not in known:
                shard.update(edge.UpdateOperation.create_field_index(name, kind))


def _restore(shard_dir: Path) -> None:
    """Finish a ``rebuild`` that stopped in its swap: stopped between the two renames, the old
    shard, moved aside, goes back (the next rebuild builds the new one again); stopped after
    them, the old shard is removed."""
    replaced = shard_dir.with_name(shard_dir.name + _REPLACED)
    if replaced.exists():
        if shard_dir.exists():  # the new shard is in place: only the old one's removal was left
            shutil.rmtree(replaced)
        else:
            replaced.rename(shard_dir)


def _has_int8_index(shard_dir: Path) -> bool:
    """Whether the Edge shard in ``shard_dir`` was created with the int8 index and no HNSW graph
    (its own record of its config, ``edge_config.json``)."""
    try:
        config = json.loads((shard_dir / "edge_config.json").read_text())
    except (OSError, ValueError):
        return False
    hnsw = config.get("hnsw_config") or {}
    return bool(config.get("quantization_config")) and hnsw.get("m") == 0


def _in_order(found: Iterable[StoredPaper], paper_ids: Sequence[str]) -> list[StoredPaper]:
    by_id = {paper.paper_id: paper for paper in found}
    return [by_id[pid] for pid in paper_ids if pid in by_id]


class QdrantServerStore:
    """A Qdrant server (or qdrant-client's local mode, in tests) holding ``COLLECTION``."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._exists = False  # cached once seen: the collection is never dropped by paperwire

    def _collection_exists(self) -> bool:
        if not self._exists:
            self._exists = self._client.collection_exists(COLLECTION)
            if self._exists:
                self._indexes()
        return self._exists

    def _indexes(self) -> None:
        """Index the payload fields the collection does not index yet (all of them, new; those
        added since, one created by an earlier version)."""
        known = self._client.get_collection(COLLECTION).payload_schema
        for names, kind in (
            (_KEYWORD_FIELDS, models.PayloadSchemaType.KEYWORD),
            (_FLOAT_FIELDS, models.PayloadSchemaType.FLOAT),
        ):
            for name in names:
                if name not in known:
                    self._client.create_payload_index(COLLECTION, name, kind)

    def _create_collection(self, size: int) -> None:
        try:
            self._client.create_collection(
                COLLECTION,
                vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE),
            )
        except Exception:
            # Another writer may have created it between our check and our create (409).
            if not self._client.collection_exists(COLLECTION):
                raise
        self._indexes()
        self._exists = True

    def upsert(self, papers: Sequence[StoredPaper]) -> None:
        if not papers:
            return
        vectors = [_as_list(p.vector) for p in papers]
        if not self._collection_exists():
            self._create_collection(len(vectors[0]))
        points = [
            models.PointStruct(id=point_id(p.paper_id), vector=v, payload=_payload(p))
            for p, v in zip(papers, vectors, strict=True)
        ]
        self._client.upsert(COLLECTION, points=points, wait=True)

    def get(self, paper_ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPaper]:
        if not paper_ids or not self._collection_exists():
            return []
        records = self._client.retrieve(
            COLLECTION,
            ids=[point_id(pid) for pid in dict.fromkeys(paper_ids)],
            with_payload=True,
            with_vectors=with_vectors,
        )
        return _in_order((_stored(r.payload, r.vector) for r in records), paper_ids)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        published_since: float | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        if k <= 0 or not self._collection_exists():
            return []
        must: list[models.Condition] = []
        if published_since is not None:
            must.append(
                models.FieldCondition(key="published_ts", range=models.Range(gte=published_since))
            )
        must_not: list[models.Condition] = (
            [models.HasIdCondition(has_id=[point_id(pid) for pid in exclude])] if exclude else []
        )
        result = self._client.query_points(
            COLLECTION,
            query=_as_list(vector),
            limit=k,
            query_filter=models.Filter(must=must or None, must_not=must_not or None),
            with_payload=True if with_payload else ["paper_id"],
            with_vectors=with_vectors,
        )
        return _hits(result.points)

    def embedded_since(self, since: float, limit: int) -> list[StoredPaper]:
        if limit <= 0 or not self._collection_exists():
            return []
        records, _ = self._client.scroll(
            COLLECTION,
            scroll_filter=_server_since(since),
            limit=limit,
            with_payload=True,
            with_vectors=True,
        )
        return [_stored(r.payload, r.vector) for r in records]

    def papers_since(
        self, since: float, fields: Sequence[str] = (), page: int = PAGE
    ) -> Iterator[list[StoredPaper]]:
        if not self._collection_exists():
            return
        offset = None
        while True:
            records, offset = self._client.scroll(
                COLLECTION,
                scroll_filter=_server_since(since, _CHANGED),
                limit=page,
                offset=offset,
                with_payload=["paper_id", *fields],
                with_vectors=True,
            )
            yield [_stored(r.payload, r.vector) for r in records if r.payload]
            if offset is None:
                return

    def count(self) -> int:
        if not self._collection_exists():
            return 0
        return self._client.count(COLLECTION, exact=True).count

    def ping(self) -> bool:
        try:
            self._client.get_collections()
        except Exception:
            # Readiness only asks "does it answer": any failure (refused, timeout, closed) is a no.
            return False
        return True

    def close(self) -> None:
        self._client.close()


class QdrantEdgeStore:
    """Embedded Qdrant Edge: one shard under ``path/COLLECTION``, owned by this store alone.

    Qdrant Edge allows one process per data dir (its WAL lock). The shard only appears on the first
    upsert, so a lock file taken at open makes a second open fail at once, not at the first write.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._lock_file = (path / ".lock").open("w")
        try:
            # flock is per open file, so a second store in this same process is refused too.
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise VectorDirInUse(
                f"Qdrant Edge data dir {path} is already open in another store or process: "
                "Edge allows one process per data dir, so share one store (single-node mode) "
                "or set QDRANT_URL to use a Qdrant server"
            ) from None
        self._dir = path / COLLECTION
        self._create_lock = threading.Lock()
        self._closed = False
        self._shard: edge.EdgeShard | None
        try:
            _restore(self._dir)
            self._shard = edge.EdgeShard.load(str(self._dir)) if self._dir.exists() else None
        except Exception:
            self._lock_file.close()
            raise
        if self._shard is not None:
            _edge_indexes(self._shard)
        # A shard created before the int8 index stays as it was: optimize() would build it the
        # default HNSW graph, for minutes, holding the process.
        self._indexed = self._shard is not None and _has_int8_index(self._dir)
        if self._shard is not None and not self._indexed:
            log.warning(
                "the Qdrant Edge shard in %s has no int8 index: each search scans every vector "
                "(~3x slower at 100k papers); with paperwire stopped, `paperwire reindex` "
                "rebuilds it (~45 s per 100k papers, nothing embedded again)",
                path,
            )

    def _live(self) -> edge.EdgeShard | None:
        if self._closed:
            raise RuntimeError("QdrantEdgeStore is closed")
        return self._shard

    def _create(self, size: int) -> edge.EdgeShard:
        with self._create_lock:  # two threads' first upserts must not both create
            if self._shard is None:
                self._shard = _new_edge_shard(self._dir, size)
                self._indexed = True
            return self._shard

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Copy a shard created before the int8 index into a new one that has it, vectors and
        payloads as stored (nothing is embedded again), and put it in the old one's place.
        Returns the papers copied (0: nothing to do). ``progress(copied, total)`` after each page.

        The old shard stays whole until the new one is complete; a crash between the two renames
        at the end is undone when the store next opens (``_restore``).
        """
        old = self._live()
        if old is None or self._indexed:
            return 0
        total = old.count(edge.CountRequest(exact=True))
        building = self._dir.with_name(COLLECTION + _BUILDING)
        shutil.rmtree(building, ignore_errors=True)  # a rebuild that was interrupted
        new: edge.EdgeShard | None = None
        copied, offset = 0, None
        while True:
            records, offset = old.scroll(
                edge.ScrollRequest(offset=offset, limit=PAGE, with_payload=True, with_vector=True)
            )
            found = [(r, _as_list(r.vector)) for r in records if r.vector is not None]
            if found:
                if new is None:
                    new = _new_edge_shard(building, len(found[0][1]))
                points = [edge.Point(r.id, vector, r.payload) for r, vector in found]
                new.update(edge.UpdateOperation.upsert_points(points))
                new.optimize()
                copied += len(points)
                if progress:
                    progress(copied, total)
            if offset is None:
                break
        if new is None:
            return 0
        new.flush()
        new.close()
        old.flush()
        old.close()
        self._shard = None
        replaced = self._dir.with_name(COLLECTION + _REPLACED)
        self._dir.rename(replaced)
        building.rename(self._dir)
        shutil.rmtree(replaced)
        self._shard = edge.EdgeShard.load(str(self._dir))
        self._indexed = True
        return copied

    def upsert(self, papers: Sequence[StoredPaper]) -> None:
        if not papers:
            return
        vectors = [_as_list(p.vector) for p in papers]
        shard = self._live() or self._create(len(vectors[0]))
        points = [
            edge.Point(point_id(p.paper_id), v, _payload(p))
            for p, v in zip(papers, vectors, strict=True)
        ]
        # Durable on return: Edge writes the WAL before applying (survives a hard exit).
        shard.update(edge.UpdateOperation.upsert_points(points))
        if self._indexed:
            shard.optimize()  # ~0.01 ms unless a segment is due (see EDGE_INDEX_AFTER_KB)

    def get(self, paper_ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPaper]:
        shard = self._live()
        if shard is None or not paper_ids:
            return []
        # Edge 0.9.0 needs both flags positionally, though its stub marks them optional.
        records = shard.retrieve(
            [point_id(pid) for pid in dict.fromkeys(paper_ids)], True, with_vectors
        )
        return _in_order((_stored(r.payload, r.vector) for r in records), paper_ids)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        published_since: float | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[Hit]:
        shard = self._live()
        if shard is None or k <= 0:
            return []
        must: list[Any] = []
        if published_since is not None:
            must.append(
                edge.FieldCondition("published_ts", range=edge.RangeFloat(gte=published_since))
            )
        must_not: list[Any] = (
            [edge.HasIdCondition({point_id(pid) for pid in exclude})] if exclude else []
        )
        request = edge.QueryRequest(
            limit=k,
            query=edge.Query.Nearest(_as_list(vector)),
            filter=edge.Filter(must=must or None, must_not=must_not or None),
            with_payload=True if with_payload else ["paper_id"],
            with_vector=with_vectors,
            # Not ``exact``, which would scan the float32 vectors even where the int8 index is
            # built; segments without it (new papers, older shards) are scanned exactly anyway.
            params=edge.SearchParams(
                quantization=edge.QuantizationSearchParams(
                    rescore=True, oversampling=EDGE_OVERSAMPLING
                )
            ),
        )
        return _hits(shard.query(request))

    def embedded_since(self, since: float, limit: int) -> list[StoredPaper]:
        shard = self._live()
        if shard is None or limit <= 0:
            return []
        records, _ = shard.scroll(
            edge.ScrollRequest(
                limit=limit,
                filter=_edge_since(since),
                with_payload=True,
                with_vector=True,
            )
        )
        return [_stored(r.payload, r.vector) for r in records]

    def papers_since(
        self, since: float, fields: Sequence[str] = (), page: int = PAGE
    ) -> Iterator[list[StoredPaper]]:
        offset = None
        while (shard := self._live()) is not None:
            records, offset = shard.scroll(
                edge.ScrollRequest(
                    offset=offset,
                    limit=page,
                    filter=_edge_since(since, _CHANGED),
                    with_payload=["paper_id", *fields],
                    with_vector=True,
                )
            )
            yield [_stored(r.payload, r.vector) for r in records if r.payload]
            if offset is None:
                return

    def count(self) -> int:
        shard = self._live()
        return 0 if shard is None else shard.count(edge.CountRequest(exact=True))

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            if self._shard is not None:
                self._shard.info()
        except Exception:
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        self._lock_file.close()  # releases the flock
