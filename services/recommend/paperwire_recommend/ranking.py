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
    "a an and are as at be by for from in into is it its of on or our that the their this to "
    "using via we with without based new towards".split()
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

    ``texts`` (title and abstract per paper) turn on word matching for text interests.
    """
    if not evidence or not paper_ids:
        return []
    scores = np.stack([e.vector for e in evidence]) @ vectors.T  # evidence × papers cosines
    matched = None
    if texts is not None and lexical_weight:
        lexical, matched = lexical_scores(evidence, texts)
        scores = scores + lexical_weight * lexical
    best = scores.argmax(axis=0)
    top = scores[best, np.arange(len(paper_ids))]
    ranked = []
    for col in np.argsort(-top, kind="stable"):
        if len(ranked) == k or top[col] < min_score:
            break
        if paper_ids[col] in exclude:
            continue
        reason = evidence[best[col]].reason
        if matched is not None and (words := matched[best[col]][col]):
            reason += f" ({', '.join(words[:3])})"
        ranked.append(Ranked(paper_ids[col], float(top[col]), reason))
    return ranked
