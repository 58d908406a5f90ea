"""The vector-collection contract and the store both embed (writes) and recommend (reads) use.

It lives in shared because two services use it and in single-node mode they must share one instance:
Qdrant Edge allows one process per data dir. Two real backends: a Qdrant server through qdrant-client
(``QDRANT_URL`` set) and embedded Qdrant Edge on disk (no URL).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

COLLECTION = "papers"
# Point ids are derived from the stable paper id, so re-upserting a paper overwrites it.
_POINT_NAMESPACE = uuid.UUID("6f1c8a52-3b7e-4c55-9a8e-2d0f4e1b7c90")


def point_id(paper_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, paper_id))


@dataclass(frozen=True)
class StoredPaper:
    """A paper as stored: its payload and, when asked for, its unit-length vector.

    Payload keys written by embed: every ``PaperIngested`` field (JSON mode), plus ``content_hash``,
    ``model``, ``embedded_at`` (unix seconds) and ``published_ts`` (unix seconds of the published date,
    or of first sight when the source gives no date). Both timestamps are range-filterable.
    """

    paper_id: str
    payload: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    paper_id: str
    score: float
    payload: dict[str, Any]


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
    ) -> list[Hit]:
        """The ``k`` nearest papers by cosine, best first, skipping ``exclude`` (paper ids)."""

    def embedded_since(self, since: float, limit: int) -> list[StoredPaper]:
        """Papers with ``embedded_at >= since`` (with vectors), at most ``limit``."""

    def count(self) -> int: ...

    def ping(self) -> bool:
        """True when the backend answers (for readiness)."""

    def close(self) -> None: ...


def open_vector_store(url: str | None, path: Path) -> VectorStore:
    """Qdrant server at ``url`` when given, else Qdrant Edge on disk under ``path``."""
    raise NotImplementedError
