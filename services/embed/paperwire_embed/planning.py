"""Which papers of a batch need the model, and what gets stored for each (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time
from typing import Any

from paperwire_shared.events import PaperIngested
from paperwire_shared.vectors import StoredPaper


def latest_versions(papers: Iterable[PaperIngested]) -> list[PaperIngested]:
    """One event per paper: the highest version, the last seen among equals."""
    latest: dict[str, PaperIngested] = {}
    for paper in papers:
        seen = latest.get(paper.paper_id)
        if seen is None or paper.version >= seen.version:
            latest[paper.paper_id] = paper
    return list(latest.values())


def needs_encoding(paper: PaperIngested, stored: StoredPaper | None, model: str) -> bool:
    """Encode only text the model has not seen: the same text is never embedded twice."""
    if stored is None or stored.vector is None:
        return True
    return stored.payload.get("content_hash") != paper.content_hash or (
        stored.payload.get("model") != model
    )


def payload_for(
    paper: PaperIngested, model: str, now: datetime, stored: StoredPaper | None
) -> dict[str, Any]:
    """Everything readers need, with range-filterable timestamps.

    ``embedded_at`` keeps its first value across updates (new versions, popularity), so an update
    never makes an old paper look new to a digest; ``published_ts`` falls back to first sight.
    """
    first_seen: Mapping[str, Any] = stored.payload if stored else {}
    embedded_at = float(first_seen.get("embedded_at", now.timestamp()))
    if paper.published is not None:
        published_ts = datetime.combine(paper.published, time(), tzinfo=UTC).timestamp()
    else:
        published_ts = float(first_seen.get("published_ts", paper.ingested_at.timestamp()))
    return {
        **paper.model_dump(mode="json"),
        "content_hash": paper.content_hash,
        "model": model,
        "embedded_at": embedded_at,
        "updated_at": now.timestamp(),
        "published_ts": published_ts,
    }
