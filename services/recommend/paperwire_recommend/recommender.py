"""Recommendations and digests for one user: gathers evidence and candidates, then ranks (pure)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from paperwire_recommend.config import Settings
from paperwire_recommend.encoder import TextEncoder
from paperwire_recommend.ranking import Evidence, Ranked, rank
from paperwire_recommend.store import Store, User
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.vectors import StoredPaper, VectorStore

log = logging.getLogger(__name__)

# Papers considered for one digest: a busy arXiv day in cs is ~2,000 new papers.
MAX_DIGEST_CANDIDATES = 50_000


@dataclass(frozen=True)
class Recommendation:
    ranked: Ranked
    payload: dict[str, Any]


class Recommender:
    def __init__(
        self, settings: Settings, store: Store, vectors: VectorStore, encoder: TextEncoder
    ) -> None:
        self.settings = settings
        self.store = store
        self.vectors = vectors
        self.encoder = encoder

    async def evidence(self, user: User) -> list[Evidence]:
        """Each interest's text and seed papers as vectors; texts are encoded once, then kept."""
        missing = [i for i in user.interests if i.text and i.vector is None]
        if missing:
            encoded = await self.encoder.encode([i.text or "" for i in missing])
            for interest, row in zip(missing, encoded, strict=True):
                interest.vector = [float(x) for x in row]
            await asyncio.to_thread(self.store.update_user, user, user.updated_at)
        seed_ids = [s for i in user.interests for s in i.seed_paper_ids]
        seeds = {
            s.paper_id: s
            for s in await asyncio.to_thread(self.vectors.get, seed_ids, with_vectors=True)
        }
        evidence = []
        for interest in user.interests:
            if interest.vector is not None:
                vector = np.asarray(interest.vector, np.float32)
                evidence.append(Evidence(interest.name, vector, text=interest.text))
            for seed_id in interest.seed_paper_ids:
                seed = seeds.get(seed_id)
                if seed is not None and seed.vector is not None:
                    title = seed.payload.get("title", seed_id)
                    evidence.append(Evidence(interest.name, seed.vector, seed_title=title))
        return evidence

    async def recommend(
        self, user: User, k: int, published_since: float | None = None
    ) -> list[Recommendation]:
        evidence = await self.evidence(user)
        if not evidence:
            return []
        exclude = await asyncio.to_thread(self.store.excluded_papers, user.id)
        # Seed papers are the user's own: never recommend them back.
        exclude |= {s for i in user.interests for s in i.seed_paper_ids}

        def candidates() -> list[Any]:
            found: dict[str, Any] = {}
            for item in evidence:
                # A wider pool than k, so word rarity means something when re-ranked.
                for hit in self.vectors.search(
                    item.vector, max(k * 5, 50), exclude=exclude, published_since=published_since
                ):
                    found.setdefault(hit.paper_id, hit)
            stored = self.vectors.get(list(found), with_vectors=True)
            return [p for p in stored if p.vector is not None]

        papers = await asyncio.to_thread(candidates)
        if not papers:
            return []
        ranked = rank(
            evidence,
            [p.paper_id for p in papers],
            _matrix(papers),
            k=k,
            texts=[paper_text(p.payload) for p in papers],
        )
        payloads = {p.paper_id: p.payload for p in papers}
        return [Recommendation(r, payloads[r.paper_id]) for r in ranked]

    async def build_digest(self, user: User, digest_key: str, now: datetime) -> DigestDue | str:
        """The digest for ``digest_key``, or the reason there is none (nothing new worth sending)."""
        evidence = await self.evidence(user)
        if not evidence:
            return "no interests with text or known seed papers"
        since = await asyncio.to_thread(self.store.last_digest_at, user.id)
        if since is None:
            since = now - timedelta(days=self.settings.first_digest_lookback_days)
        exclude = await asyncio.to_thread(self.store.excluded_papers, user.id)
        exclude |= {s for i in user.interests for s in i.seed_paper_ids}
        found = await asyncio.to_thread(
            self.vectors.embedded_since, since.timestamp(), MAX_DIGEST_CANDIDATES
        )
        papers = [p for p in found if p.vector is not None]
        if not papers:
            return "no new papers"
        ranked = rank(
            evidence,
            [p.paper_id for p in papers],
            _matrix(papers),
            k=user.max_papers,
            texts=[paper_text(p.payload) for p in papers],
            min_score=self.settings.min_score,
            exclude=exclude,
        )
        if not ranked:
            return "no new papers close enough to your interests"
        payloads = {p.paper_id: p.payload for p in papers}
        return DigestDue(
            digest_key=digest_key,
            user_id=user.id,
            email=user.email,
            papers=tuple(ranked_paper(r, payloads[r.paper_id]) for r in ranked),
            created_at=now,
        )


def _matrix(papers: list[StoredPaper]) -> np.ndarray:
    """The papers' vectors as rows; callers keep only papers that have one."""
    return np.stack([p.vector for p in papers if p.vector is not None])


def paper_text(payload: dict[str, Any]) -> str:
    return f"{payload.get('title', '')}\n{payload.get('abstract', '')}"


def ranked_paper(ranked: Ranked, payload: dict[str, Any]) -> RankedPaper:
    return RankedPaper(
        paper_id=ranked.paper_id,
        title=payload.get("title", ranked.paper_id),
        abstract=payload.get("abstract", ""),
        authors=tuple(payload.get("authors") or ()),
        url=payload.get("url"),
        score=round(ranked.score, 4),
        reason=ranked.reason,
    )
