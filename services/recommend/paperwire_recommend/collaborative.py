"""What readers of a user's papers also saved (pure): RP3beta co-saves over every user's library.

A user's library is what they chose or kept: seed papers, likes and saves. A random walk goes from
one of the user's papers to a reader who saved it, then to another paper that reader saved; a
paper's score is the probability of ending on it, divided by its number of savers to the power
``BETA`` so that papers everyone saves do not win every list, each step's probability raised to
``ALPHA`` (Paudel et al., "Updatable, accurate, diverse, and scalable recommendations for
interactive applications", 2016).

On CiteULike-a (development split, warm protocol, 300 users) RP3beta alone (alpha 1, the plain
walk) scored Recall@50 0.326 and nDCG@10 0.165 with ``BETA`` 0.3 (0.301 and 0.140 with 0.5, 0.329
and 0.172 with 0.2), and item cosine 0.316 and 0.135; blended with content
(ranking.COLLABORATIVE_WEIGHT) it adds ~0.10 Recall@50. EASE (a 17k × 17k inverse, 6 minutes
here) blended no better (0.428 vs 0.423), and cannot be kept fresh at 100k papers: this walk needs
no training, only two sparse products per request.

A brand-new paper has no savers, so the walk cannot reach it. ``carried`` takes the walk to it
through content: a new paper scores what the walk gave the ``NEIGHBOURS`` saved papers most like
it (cosine, soft-max weights at ``CARRY_TEMPERATURE``). On the development split (cold protocol,
300 users, seeds 1 and 2) this lifted Recall@50 from 0.560 to 0.583 and from 0.571 to 0.591;
folding in the users who are not being evaluated through "similar readers' libraries" instead
(user kNN) gave 0.570. ``crowding`` (a paper's mean cosine to its nearest saved papers) measures
how much a paper looks like everybody's library ("hubness"): ranking.CROWDING_WEIGHT uses it.

Finding a paper's nearest saved papers is a pass over all of them, so ``Nearest`` keeps what it
found across co-save rebuilds (only papers saved since are compared again) and recommend finds
them for newly embedded papers in the background, before any request needs them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]

BETA = 0.3
# RP3beta's alpha: each step's probability raised to this power. Below 1, a reader with a long
# library passes on more than 1/(library size) to each of their papers: a specialist's 200-paper
# library says as much as a student's 10. Development split (warm, 300 users, seeds 1, 2, 3):
# Recall@50 0.427 / 0.422 / 0.421 at 1.0, 0.432 / 0.433 / 0.429 at 0.6 (0.5-0.7 within 0.005 of
# it; 1.15 worse: 0.418 on seed 1). Carried to new papers (``carried``), the same walk at 0.6 cost
# cold nDCG@10 0.002 on seeds 1 and 2 (0.310 to 0.308, 0.282 to 0.280), so carrying keeps 1.0:
# cold unchanged, warm 0.432 / 0.431 on seeds 1 and 2.
ALPHA = 0.6
CARRIED_ALPHA = 1.0
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

    def __init__(
        self, pairs: Iterable[tuple[str, str]], beta: float = BETA, alpha: float = ALPHA
    ) -> None:
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
        self.alpha = alpha
        # paper -> reader (uniform over its savers), reader -> paper (uniform over their saves),
        # each probability raised to the walk's alpha when it walks
        self._readers_of = saves.T.tocsr()
        self._saves = saves
        self._library_sizes = np.maximum(per_reader, 1)
        self._penalty = np.maximum(self.savers, 1) ** -beta
        self._nearest: Nearest | None = None
        # Nearest's rows (its ids list) and their columns here, extended as it grows
        self._columns_of: tuple[list[str] | None, np.ndarray] = (None, np.zeros(0, np.int64))
        # The last walk at each alpha, by positives: a request walks from the same library for its
        # co-saved candidates (``neighbours``), their scores (``scores``) and, at
        # ``CARRIED_ALPHA``, what is carried to new papers (``carried``).
        self._last_walks: dict[float, tuple[tuple[str, ...], np.ndarray]] = {}
        # The last candidates asked about and their columns (``_candidate_columns``).
        self._last_candidates: tuple[Sequence[str] | None, np.ndarray] = (None, np.zeros(0, int))

    def attach(self, nearest: Nearest) -> None:
        """Find new papers' nearest saved papers with ``nearest`` (synced with this build's saved
        papers, ``Nearest.sync``): what ``carried`` needs."""
        self._nearest = nearest

    def __len__(self) -> int:
        return len(self.papers)

    def walk(self, positives: Sequence[str], alpha: float | None = None) -> np.ndarray:
        """Score of every known paper (in ``self.ids`` order) from the user's positives, with
        ``alpha`` (default: this build's). A new array each call: callers may change it."""
        alpha = self.alpha if alpha is None else alpha
        key = tuple(positives)
        last = self._last_walks.get(alpha)  # one read: requests run in threads
        if last is not None and last[0] == key:
            return last[1].copy()
        rows = [self.papers[p] for p in positives if p in self.papers]
        if not rows:
            return np.zeros(len(self.papers))
        to_readers = np.maximum(self.savers[rows], 1) ** -alpha
        readers = self._readers_of[rows].T @ to_readers
        reached = self._saves.T @ (readers * self._library_sizes**-alpha)
        walked = reached * self._penalty
        self._last_walks[alpha] = (key, walked.copy())
        return walked

    def corpus_scale(self, positives: Sequence[str], corpus: int) -> tuple[float, float]:
        """The mean and std of ``scores`` over a corpus of ``corpus`` papers, the positives left
        out: every paper nobody saved scores 0, so the walk's scores are all it takes."""
        walked = self.walk(positives)
        for p in positives:
            if p in self.papers:
                walked[self.papers[p]] = 0
        n = max(corpus - len(positives), len(walked), 1)
        mean = float(walked.sum()) / n
        return mean, math.sqrt(max(float(walked @ walked) / n - mean * mean, 0.0))

    def scores(self, positives: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """One co-save score per candidate (0 for papers nobody saved)."""
        return np.append(self.walk(positives), 0.0)[self._candidate_columns(candidates)]

    def _candidate_columns(self, candidates: Sequence[str]) -> np.ndarray:
        """Each candidate's column in this build, len(self.ids) for a paper nobody saved. Kept
        for the last candidates asked about: every digest of a scheduler tick asks about the same
        day's papers (``Recommender.recent_candidates``), ~0.5 ms of lookups each time."""
        last, columns = self._last_candidates  # one read: requests run in threads
        if last is not candidates:
            index, unknown = self.papers, len(self.ids)
            columns = np.fromiter((index.get(c, unknown) for c in candidates), int, len(candidates))
            self._last_candidates = (candidates, columns)
        return columns

    def carried(
        self,
        positives: Sequence[str],
        candidates: Sequence[str],
        vectors: np.ndarray,
        evidence: np.ndarray | None = None,
        k: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Per candidate (unit ``vectors`` rows): the walk (at ``CARRIED_ALPHA``) carried to it
        from its nearest saved papers, and its crowding (mean cosine to them); NaN for a candidate
        with savers of its own. None without attached vectors or with too few saved papers.

        With ``evidence`` (unit vectors of the user's evidence, rows) and ``k`` (the papers to be
        shown), only the ``SHORTLIST_PER_PAPER`` × ``k`` candidates without savers closest to any
        evidence are carried to, the others are NaN: finding a paper's nearest saved papers for
        the first time costs a pass over all of them (~0.15 ms per paper at 20k saved papers),
        and a paper far down the list does not reach the top on co-saves alone.
        """
        if self._nearest is None or len(self._nearest) <= NEIGHBOURS:
            return None
        walked = self.walk(positives, CARRIED_ALPHA)
        for p in positives:  # the walk comes back to where it started: that is not news
            if p in self.papers:
                walked[self.papers[p]] = 0
        # A paper with savers of its own has co-saves (``scores``): carrying only blurs them.
        carried = np.full(len(candidates), np.nan)
        crowding = np.full(len(candidates), np.nan)
        new = np.flatnonzero(self._candidate_columns(candidates) == len(self.ids)).tolist()
        vectors = np.asarray(vectors, np.float32)
        if evidence is not None and k is not None and len(new) > SHORTLIST_PER_PAPER * k:
            closest = (np.asarray(evidence, np.float32) @ vectors[new].T).max(axis=0)
            order = np.argsort(-closest, kind="stable")[: SHORTLIST_PER_PAPER * k]
            new = sorted(new[i] for i in order)
        if new:
            rows, near, ids = self._nearest.find([candidates[i] for i in new], vectors[new])
            cols = self._columns(ids)[rows]  # a paper not saved in this build reaches the 0
            weights = np.exp((near - near.max(axis=1, keepdims=True)) / CARRY_TEMPERATURE)
            weights /= weights.sum(axis=1, keepdims=True)
            carried[new] = (np.append(walked, 0.0)[cols] * weights).sum(axis=1)
            crowding[new] = near.mean(axis=1)
        return carried, crowding

    def _columns(self, ids: list[str]) -> np.ndarray:
        """This build's column of each of ``Nearest``'s rows (``ids``), len(self.ids) if none."""
        known_ids, columns = self._columns_of
        if known_ids is not ids:  # Nearest started afresh
            columns = np.zeros(0, np.int64)
        if len(ids) > len(columns):
            extra = [self.papers.get(p, len(self.ids)) for p in ids[len(columns) :]]
            columns = np.concatenate([columns, np.asarray(extra, np.int64)])
            self._columns_of = (ids, columns)  # one assignment: requests run in threads
        return columns

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


# A paper's ``NEIGHBOURS`` nearest saved papers: their rows, cosines, and the rows compared with.
_Found = tuple[np.ndarray, np.ndarray, int]


@dataclass(frozen=True)
class _Saved:
    """Saved papers as ``Nearest`` knows them at one time, replaced whole by ``sync`` so a reader
    never sees it half updated: their unit vectors (rows, in the order first saved), which rows are
    gone (no longer saved, or embedded again), and the neighbours found against those rows."""

    ids: list[str]  # row -> paper; rows are only ever appended until a fresh start
    matrix: np.ndarray
    gone: np.ndarray
    found: dict[str, _Found]
    rows: dict[str, int]  # saved paper -> its live row

    @classmethod
    def empty(cls) -> _Saved:
        return cls([], np.zeros((0, 0), np.float32), np.zeros(0, bool), {}, {})


class Neighbours(NamedTuple):
    rows: np.ndarray  # papers × NEIGHBOURS rows of ``ids``
    cosines: np.ndarray
    ids: list[str]


class Nearest:
    """Each paper's ``NEIGHBOURS`` nearest saved papers (cosine), kept across co-save rebuilds.

    Saved papers get rows in the order they are first saved. A paper's neighbours are found once
    against every saved paper, then, as papers are saved, only against the rows added since; a
    neighbour that is no longer saved makes that paper's neighbours be found again. Thread-safe:
    one ``sync`` at a time, ``find`` from any thread meanwhile.
    """

    # Rows gone past this share of all rows: start afresh rather than carry them.
    MAX_GONE = 0.25

    def __init__(self) -> None:
        self.fresh_starts = 0  # times everything found was dropped (too many rows gone)
        self._saved = _Saved.empty()
        self._sync = threading.Lock()

    def __len__(self) -> int:
        """The saved papers (live rows)."""
        return len(self._saved.rows)

    def sync(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Make the saved papers exactly ``vectors`` (paper id -> unit vector)."""
        with self._sync:
            saved = self._saved
            gone = saved.gone.copy()
            rows = dict(saved.rows)
            for paper, row in saved.rows.items():
                vector = vectors.get(paper)
                if vector is None or not np.array_equal(saved.matrix[row], vector):
                    gone[row] = True
                    del rows[paper]
            if gone.sum() > self.MAX_GONE * max(len(gone), 1):
                saved, rows = _Saved.empty(), {}
                gone = saved.gone
                self.fresh_starts += 1
            added = [p for p in vectors if p not in rows]
            if not added and len(rows) == len(self._saved.rows) and saved is self._saved:
                return
            matrix = saved.matrix
            if added:
                block = np.stack([np.asarray(vectors[p], np.float32) for p in added])
                matrix = np.concatenate([matrix, block]) if len(matrix) else block
                gone = np.concatenate([gone, np.zeros(len(added), bool)])
                for paper in added:
                    rows[paper] = len(saved.ids)
                    saved.ids.append(paper)
            self._saved = _Saved(saved.ids, matrix, gone, saved.found, rows)

    def papers_found(self) -> int:
        """Papers whose neighbours were found (some perhaps among fewer saved papers than now)."""
        return len(self._saved.found)

    def known(self, paper: str) -> bool:
        """Whether ``paper``'s neighbours are found among all papers saved now."""
        saved = self._saved
        found = saved.found.get(paper)
        return (
            found is not None and found[2] == len(saved.matrix) and not saved.gone[found[0]].any()
        )

    def find(self, papers: Sequence[str], vectors: np.ndarray) -> Neighbours:
        """Each paper's (unit ``vectors`` rows) nearest saved papers, in no particular order.
        Needs more saved papers than ``NEIGHBOURS``."""
        saved = self._saved
        total = len(saved.matrix)
        rows = np.zeros((len(papers), NEIGHBOURS), np.int32)
        near = np.zeros((len(papers), NEIGHBOURS), np.float32)
        # Papers to compare with rows ``first:``, by ``first``, with what was found before.
        waiting: dict[int, list[tuple[int, _Found | None]]] = {}
        for i, paper in enumerate(papers):
            found = saved.found.get(paper)
            # Found against more rows than this snapshot has (a sync since): find it again.
            if found is None or found[2] > total or saved.gone[found[0]].any():
                waiting.setdefault(0, []).append((i, None))
            elif found[2] < total:
                waiting.setdefault(found[2], []).append((i, found))
            else:
                rows[i], near[i] = found[0], found[1]
        for first, group in waiting.items():
            for start in range(0, len(group), _BLOCK):
                block = group[start : start + _BLOCK]
                at = [i for i, _ in block]
                rows[at], near[at] = self._best(saved, first, vectors[at], [f for _, f in block])
                for i in at:
                    saved.found[papers[i]] = (rows[i].copy(), near[i].copy(), total)
        return Neighbours(rows, near, saved.ids)

    @staticmethod
    def _best(
        saved: _Saved, first: int, vectors: np.ndarray, earlier: list[_Found | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours among rows ``first:`` and, from ``first`` > 0, those found ``earlier``
        among the rows before (all of them given then)."""
        sims = vectors @ saved.matrix[first:].T
        sims[:, saved.gone[first:]] = -np.inf
        rows = np.broadcast_to(np.arange(first, len(saved.matrix)), sims.shape)
        if first:
            sims = np.hstack([np.stack([f[1] for f in earlier if f is not None]), sims])
            rows = np.hstack([np.stack([f[0] for f in earlier if f is not None]), rows])
        # take_along_axis copies: a slice would keep the whole block × saved-papers array alive.
        best = np.argpartition(sims, -NEIGHBOURS, axis=1)[:, -NEIGHBOURS:]
        return (
            np.take_along_axis(rows, best, axis=1).astype(np.int32),
            np.take_along_axis(sims, best, axis=1).astype(np.float32),
        )
