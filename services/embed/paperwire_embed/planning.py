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


def is_stale(paper: PaperIngested, stored: StoredPaper | None) -> bool:
    """An event older than the one stored (an earlier version, or older upvotes of the same one).

    Replayed late (a redelivery, a dead letter put back), it must not undo the newer one.
    """
    if stored is None:
        return False
    version = int(stored.payload.get("version", 1))
    if paper.version != version:
        return paper.version < version
    seen = stored.payload.get("ingested_at")
    if seen is None:
        return False
    return paper.ingested_at.timestamp() < datetime.fromisoformat(seen).timestamp()


def unchanged(payload: Mapping[str, Any], stored: StoredPaper | None) -> bool:
    """True when writing ``payload`` would change nothing but its ``updated_at``: a replay."""
    if stored is None:
        return False
    ignored = {"updated_at"}
    return {k: v for k, v in payload.items() if k not in ignored} == {
        k: v for k, v in stored.payload.items() if k not in ignored
    }


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
