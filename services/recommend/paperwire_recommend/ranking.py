"""Ranking papers for a user (pure): each piece of evidence scores papers, a paper keeps its best.

Evidence is an interest's free text or one of its seed papers. Scoring by the best single piece of
evidence (not the mean of a profile) keeps two unrelated interests apart and makes every score
explainable: the reason names the evidence that earned it.

A text interest scores by meaning (cosine of embeddings) plus its words: the share of the
interest's terms, weighted by rarity among the candidates, that a paper uses. The words matter
because the model alone ranks any "fine-tuning LLMs" paper above one about LoRA for an interest in
"parameter-efficient fine-tuning (LoRA and adapters)": on the seed page, precision@5 went from 2/5
(cosine alone) to 5/5 with a word weight of 0.2-0.3.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEXICAL_WEIGHT = 0.25
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "their",
        "this",
        "to",
        "using",
        "via",
        "we",
        "with",
        "without",
        "based",
        "new",
        "towards",
    ]
)


def terms(text: str) -> set[str]:
    """Lower-cased words of three or more letters, stop words out, a plural 's' dropped."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOPWORDS:
            continue
        found.add(word[:-1] if len(word) > 4 and word.endswith("s") else word)
    return found


@dataclass(frozen=True)
class Evidence:
    interest: str
    vector: np.ndarray
    seed_title: str | None = None  # None: the interest's own text
    text: str | None = None  # the interest's text, for word matching

    @property
    def reason(self) -> str:
        if self.seed_title is not None:
            return f'close to your seed paper "{self.seed_title}" (interest "{self.interest}")'
        return f'matches your interest "{self.interest}"'


@dataclass(frozen=True)
class Ranked:
    paper_id: str
    score: float
    reason: str


def lexical_scores(
    evidence: Sequence[Evidence], texts: Sequence[str]
) -> tuple[np.ndarray, list[list[list[str]]]]:
    """Per evidence × paper: idf-weighted share of the evidence's terms in the paper, and which."""
    docs = [terms(t) for t in texts]
    n = len(docs)
    scores = np.zeros((len(evidence), n), dtype=np.float32)
    matched: list[list[list[str]]] = [[[] for _ in docs] for _ in evidence]
    for row, item in enumerate(evidence):
        if item.text is None:
            continue
        wanted = terms(item.text)
        idf = {t: math.log((n + 1) / (sum(t in d for d in docs) + 1)) + 1e-6 for t in wanted}
        total = sum(idf.values())
        if not total:
            continue
        for col, doc in enumerate(docs):
            hits = sorted((t for t in wanted if t in doc), key=lambda t: (-idf[t], t))
            scores[row, col] = sum(idf[t] for t in hits) / total
            matched[row][col] = hits
    return scores, matched


def rank(
    evidence: Sequence[Evidence],
    paper_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    k: int,
    texts: Sequence[str] | None = None,
    min_score: float = -1.0,
    exclude: frozenset[str] = frozenset(),
    lexical_weight: float = LEXICAL_WEIGHT,
) -> list[Ranked]:
    """The ``k`` best papers among ``paper_ids`` (rows of unit ``vectors``), best first.

    Interests take turns choosing their best remaining paper, so an interest with higher raw
    scores (a crowded topic) cannot fill the whole list. ``texts`` (title and abstract per paper)
    turn on word matching for text interests.
    """
    if not evidence or not paper_ids:
        return []
    scores = np.stack([e.vector for e in evidence]) @ vectors.T  # evidence × papers cosines
    matched = None
    if texts is not None and lexical_weight:
        lexical, matched = lexical_scores(evidence, texts)
        scores = scores + lexical_weight * lexical
    blocked = np.array([p in exclude for p in paper_ids])
    queues = []
    for interest in dict.fromkeys(e.interest for e in evidence):
        rows = [i for i, e in enumerate(evidence) if e.interest == interest]
        best_row = np.asarray(rows)[scores[rows].argmax(axis=0)]
        best = scores[best_row, np.arange(len(paper_ids))]
        candidates = [c for c in np.argsort(-best, kind="stable") if best[c] >= min_score]
        queues.append((iter(candidates), best_row, best))
    chosen: dict[int, Ranked] = {}
    while len(chosen) < k and queues:
        for queue in list(queues):
            order, best_row, best = queue
            col = next((c for c in order if c not in chosen and not blocked[c]), None)
            if col is None:
                queues.remove(queue)
                continue
            reason = evidence[best_row[col]].reason
            if matched is not None and (words := matched[best_row[col]][col]):
                reason += f" ({', '.join(words[:3])})"
            chosen[col] = Ranked(paper_ids[col], float(best[col]), reason)
            if len(chosen) == k:
                break
    return sorted(chosen.values(), key=lambda r: -r.score)
