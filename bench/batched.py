"""A batched digest fan-out: ranking every user at once (a prototype, not production).

It implements the walking skeleton's ``rank()`` scoring (cosine, plus ``LEXICAL_WEIGHT`` times the
idf-weighted share of an interest's terms a paper uses; each interest keeps its best evidence;
interests take turns) as matrix products over all users, so the day's paper texts are tokenised
once instead of once per user. It showed the same picks as that ``rank()`` on every sampled user.
The current ``rank()`` adds soft-max pooling of evidence, whitening, standardised knobs and
diversity, which this prototype leaves out: it measures the shape of a batched fan-out (the
products for all users, then a short per-user loop), not a drop-in replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass(frozen=True)
class UserEvidence:
    """One user's evidence, grouped by interest: ``(interest, vector, text or None)`` rows."""

    rows: list[tuple[str, np.ndarray, str | None]]


class DayIndex:
    """The day's candidate papers, prepared once: vectors, and each paper's terms as a matrix."""

    def __init__(self, vectors: np.ndarray, texts: Sequence[str]) -> None:
        from paperwire_recommend.ranking import terms

        self.vectors = vectors
        self.n = len(texts)
        self.terms = terms
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for col, text in enumerate(texts):
            for term in terms(text):
                rows.append(vocab.setdefault(term, len(vocab)))
                cols.append(col)
        data = np.ones(len(rows), dtype=np.float32)
        self.docs = sparse.csr_matrix((data, (rows, cols)), shape=(len(vocab), self.n))
        self.vocab = vocab
        df = np.asarray(self.docs.sum(axis=1)).ravel()
        self.idf = np.log((self.n + 1) / (df + 1)) + 1e-6
        self.unseen_idf = math.log(self.n + 1) + 1e-6  # a term no candidate uses


def fan_out(
    day: DayIndex,
    users: Sequence[UserEvidence],
    *,
    k: int,
    min_score: float,
    lexical_weight: float,
    chunk: int = 2_000,
) -> list[list[tuple[int, float]]]:
    """Per user, the chosen ``(paper column, score)`` pairs, best first, as ``rank()`` picks them."""
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(users), chunk):
        out += _chunk(day, users[start : start + chunk], k, min_score, lexical_weight)
    return out


def _chunk(
    day: DayIndex, users: Sequence[UserEvidence], k: int, min_score: float, weight: float
) -> list[list[tuple[int, float]]]:
    vectors: list[np.ndarray] = []
    owners: list[int] = []
    q_rows: list[int] = []
    q_cols: list[int] = []
    q_data: list[float] = []
    interest_of_row: list[int] = []
    interests_of_user: list[list[int]] = []
    for user in users:
        ids: dict[str, int] = {}
        for name, vector, text in user.rows:
            if name not in ids:
                ids[name] = len(owners)
                owners.append(len(interests_of_user))
            row = len(vectors)
            vectors.append(vector)
            interest_of_row.append(ids[name])
            if text is not None and weight:
                wanted = day.terms(text)
                idf = {
                    t: day.idf[day.vocab[t]] if t in day.vocab else day.unseen_idf for t in wanted
                }
                total = sum(idf.values())
                for term in wanted:
                    if total and term in day.vocab:
                        q_rows.append(row)
                        q_cols.append(day.vocab[term])
                        q_data.append(idf[term] / total)
        interests_of_user.append(list(ids.values()))
    scores = np.stack(vectors) @ day.vectors.T
    if q_data:
        query = sparse.csr_matrix(
            (np.asarray(q_data, np.float32), (q_rows, q_cols)), shape=(len(vectors), len(day.vocab))
        )
        scores += weight * (query @ day.docs).toarray()
    # Rows are grouped by interest, in order: the best evidence per interest is a reduceat.
    starts = np.flatnonzero(np.diff(np.asarray(interest_of_row), prepend=-1))
    best = np.maximum.reduceat(scores, starts, axis=0)
    depth = min(2 * k, day.n)  # an interest picks at most k, skipping at most k - 1 taken by others
    top = np.argpartition(-best, depth - 1, axis=1)[:, :depth]
    top_scores = np.take_along_axis(best, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
    cols, values = top.tolist(), top_scores.tolist()  # Python lists: the loop below is per item
    picks = []
    for interests in interests_of_user:
        queues = [
            iter([(c, v) for c, v in zip(cols[i], values[i], strict=True) if v >= min_score])
            for i in interests
        ]
        chosen: dict[int, float] = {}
        while len(chosen) < k and queues:
            for queue in list(queues):
                pick = next(((c, s) for c, s in queue if c not in chosen), None)
                if pick is None:
                    queues.remove(queue)
                    continue
                chosen[pick[0]] = pick[1]
                if len(chosen) == k:
                    break
        picks.append(sorted(chosen.items(), key=lambda item: -item[1]))
    return picks
