"""What readers of a user's papers also saved (pure): RP3beta co-saves over every user's library.

A user's library is what they chose or kept: seed papers, likes and saves. A random walk goes from
one of the user's papers to a reader who saved it, then to another paper that reader saved; a
paper's score is the probability of ending on it, divided by its number of savers to the power
``BETA`` so that papers everyone saves do not win every list (Paudel et al., "Updatable, accurate,
diverse, and scalable recommendations for interactive applications", 2016).

On CiteULike-a (development split, warm protocol, 300 users) RP3beta alone scored Recall@50 0.326
and nDCG@10 0.165 with ``BETA`` 0.3 (0.301 and 0.140 with 0.5, 0.329 and 0.172 with 0.2), and item
cosine 0.316 and 0.135; blended with content (ranking.COLLABORATIVE_WEIGHT) it adds ~0.10 Recall@50.
EASE (a 17k × 17k inverse, 6 minutes here) blended no better (0.428 vs 0.423), and cannot be kept
fresh at 100k papers: this walk needs no training, only two sparse products per request.

A brand-new paper has no savers, so the walk cannot reach it. ``carried`` takes the walk to it
through content: a new paper scores what the walk gave the ``NEIGHBOURS`` saved papers most like
it (cosine, soft-max weights at ``CARRY_TEMPERATURE``). On the development split (cold protocol,
300 users, seeds 1 and 2) this lifted Recall@50 from 0.560 to 0.583 and from 0.571 to 0.591;
folding in the users who are not being evaluated through "similar readers' libraries" instead
(user kNN) gave 0.570. ``crowding`` (a paper's mean cosine to its nearest saved papers) measures
how much a paper looks like everybody's library ("hubness"): ranking.CROWDING_WEIGHT uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

BETA = 0.3
# A new paper's nearest saved papers, and how sharply the nearest dominate (cosine units). K 20-200
# and temperatures 0.03-0.1 were all within 0.005 Recall@50 on the development split.
NEIGHBOURS = 20
CARRY_TEMPERATURE = 0.05
# Candidates carried to per paper asked for, the most relevant first (see ``carried``). On the
# development split (cold, k=50: 500 of ~3,400 candidates) Recall@50 was 0.585 and 0.590 on seeds
# 1 and 2, against 0.583 and 0.591 carrying to all; 6 per paper asked: 0.585 and 0.582.
SHORTLIST_PER_PAPER = 10
# Candidates compared with the saved papers at once: a block of 256 × 100k saved papers takes
# ~100 MB for the cosines and ~200 MB for argpartition's indices.
_BLOCK = 256


class CoSaves:
    """Built once from (reader, paper) pairs; answers for any set of positives and candidates."""

    def __init__(self, pairs: Iterable[tuple[str, str]], beta: float = BETA) -> None:
        readers: dict[str, int] = {}
        papers: dict[str, int] = {}
        rows, cols = [], []
        unique = tuple(dict.fromkeys(pairs))
        for reader, paper in unique:
            rows.append(readers.setdefault(reader, len(readers)))
            cols.append(papers.setdefault(paper, len(papers)))
        # Equal for two builds from the same saves: what an answer kept for a user rests on.
        self.version = hash(unique)
        self.papers = papers
        self.ids = list(papers)
        shape = (len(readers), len(papers))
        saves = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
        per_reader = np.asarray(saves.sum(axis=1)).ravel()
        self.savers = np.asarray(saves.sum(axis=0)).ravel()
        # paper -> reader (uniform over its savers), reader -> paper (uniform over their saves)
        self._to_readers = sp.diags(1 / np.maximum(self.savers, 1)) @ saves.T.tocsr()
        self._to_papers = (sp.diags(1 / np.maximum(per_reader, 1)) @ saves).tocsr()
        self._penalty = np.maximum(self.savers, 1) ** -beta
        self._vectors: np.ndarray | None = None  # unit vectors of the saved papers, ``ids`` order
        self._near: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}

    def attach_vectors(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Give the saved papers' unit vectors (by paper id), which ``carried`` compares with.

        A saved paper without a vector (not embedded yet) is never anyone's neighbour.
        """
        if not self.ids:
            return
        dim = len(next(iter(vectors.values()))) if vectors else 0
        matrix = np.zeros((len(self.ids), dim), np.float32)
        for row, paper in enumerate(self.ids):
            if (vector := vectors.get(paper)) is not None:
                matrix[row] = vector
        self._vectors = matrix if dim else None
        self._near.clear()

    def adopt(self, previous: CoSaves) -> None:
        """Keep ``previous``'s nearest saved papers of each candidate when this build has the same
        saves and saved papers' vectors (rebuilt every few minutes, the saves rarely change)."""
        same_vectors = (
            self._vectors is not None
            and previous._vectors is not None
            and np.array_equal(self._vectors, previous._vectors)
        )
        if previous.version == self.version and same_vectors:
            self._near = previous._near

    def __len__(self) -> int:
        return len(self.papers)

    def walk(self, positives: Sequence[str]) -> np.ndarray:
        """Score of every known paper (in ``self.ids`` order) from the user's positives."""
        rows = [self.papers[p] for p in positives if p in self.papers]
        if not rows:
            return np.zeros(len(self.papers))
        readers = np.asarray(self._to_readers[rows].sum(axis=0)).ravel()
        reached = self._to_papers.T @ readers
        return reached * self._penalty

    def scores(self, positives: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """One co-save score per candidate (0 for papers nobody saved)."""
        walked = self.walk(positives)
        index = self.papers
        return np.fromiter(
            (walked[index[c]] if c in index else 0.0 for c in candidates), float, len(candidates)
        )

    def carried(
        self,
        positives: Sequence[str],
        candidates: Sequence[str],
        vectors: np.ndarray,
        relevance: np.ndarray | None = None,
        limit: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Per candidate (unit ``vectors`` rows): the walk carried to it from its nearest saved papers,
        and its crowding (mean cosine to them); NaN for a candidate with savers of its own. None
        without attached vectors or with too few saved papers.

        With ``relevance`` (one score per candidate) and ``limit``, only the ``limit`` most relevant
        candidates without savers are carried to, the others are NaN: finding a paper's nearest
        saved papers costs a pass over all of them (~0.2 ms per paper at 20k saved papers), and a
        paper far down the list does not reach the top on co-saves alone. Callers ask for
        ``SHORTLIST_PER_PAPER`` times the papers they will show.
        """
        if self._vectors is None or len(self.ids) <= NEIGHBOURS:
            return None
        walked = self.walk(positives)
        for p in positives:  # the walk comes back to where it started: that is not news
            if p in self.papers:
                walked[self.papers[p]] = 0
        # A paper with savers of its own has co-saves (``scores``): carrying only blurs them.
        carried = np.full(len(candidates), np.nan)
        crowding = np.full(len(candidates), np.nan)
        new = [i for i, c in enumerate(candidates) if c not in self.papers]
        if relevance is not None and limit is not None and len(new) > limit:
            order = np.argsort(-np.asarray(relevance)[new], kind="stable")[:limit]
            new = sorted(new[i] for i in order)
        if new:
            vectors = np.asarray(vectors, np.float32)
            cols, weights, crowding[new] = self._nearest([candidates[i] for i in new], vectors[new])
            carried[new] = (walked[cols] * weights).sum(axis=1)
        return carried, crowding

    def _nearest(
        self, candidates: Sequence[str], vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each candidate's nearest saved papers (rows), their weights, and its mean cosine to them.

        Cached by paper id until the next rebuild: the same new papers are ranked for every user.
        """
        assert self._vectors is not None
        missing = [i for i, c in enumerate(candidates) if c not in self._near]
        for start in range(0, len(missing), _BLOCK):
            rows = missing[start : start + _BLOCK]
            sims = vectors[rows] @ self._vectors.T
            # A copy: a slice would keep the whole block × saved-papers index array alive.
            cols = np.argpartition(sims, -NEIGHBOURS, axis=1)[:, -NEIGHBOURS:].copy()
            near = np.take_along_axis(sims, cols, axis=1)
            weights = np.exp((near - near.max(axis=1, keepdims=True)) / CARRY_TEMPERATURE)
            weights /= weights.sum(axis=1, keepdims=True)
            for r, row in enumerate(rows):
                self._near[candidates[row]] = (cols[r], weights[r], float(near[r].mean()))
        found = [self._near[c] for c in candidates]
        return (
            np.stack([cols for cols, _, _ in found]),
            np.stack([weights for _, weights, _ in found]),
            np.fromiter((crowd for _, _, crowd in found), float, len(found)),
        )

    def neighbours(self, positives: Sequence[str], n: int) -> list[str]:
        """The ``n`` papers the walk reaches most often, best first, positives left out."""
        walked = self.walk(positives)
        for p in positives:
            if p in self.papers:
                walked[self.papers[p]] = 0
        n = min(n, int((walked > 0).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-walked, n - 1)[:n]
        return [self.ids[i] for i in top[np.argsort(-walked[top], kind="stable")]]
