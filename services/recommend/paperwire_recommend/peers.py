"""The peer recommenders `paperwire eval` compares against, each as that system does it.

Every method is fitted once on what a split lets it see, then scores one user's candidates. They
share the embeddings paperwire uses (all-MiniLM-L6-v2 by default), so differences come from the
method, not the model.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from paperwire_recommend.evaluation import Case, Context


class Method(Protocol):
    name: str

    def fit(self, ctx: Context) -> None: ...

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        """One score per candidate paper index, higher is better."""
        ...


class MostSaved:
    """The papers saved by the most users (among saves the split shows): the same list for all."""

    name = "most-saved"

    def fit(self, ctx: Context) -> None:
        counts = np.zeros(len(ctx.data.papers))
        for library in ctx.split.visible.values():
            np.add.at(counts, library, 1)
        self.counts = counts

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        return self.counts[candidates]


class ArxivSanityLite:
    """karpathy/arxiv-sanity-lite: tf-idf of the text (compute.py), per-user linear SVM (serve.py).

    As there: 1-2-grams, English stop words, min_df 5, max_df 0.5, sublinear tf, l2 norm; the SVM
    (LinearSVC, C=0.01, balanced classes) is trained on every paper in the database, the user's
    papers positive and all others negative, and ranks by its decision function. We cap the
    vocabulary at 20k features (arxiv-sanity-lite's default is 10k, for a far larger corpus).
    """

    name = "arxiv-sanity-lite"

    def fit(self, ctx: Context) -> None:
        corpus = [" ".join([p.title, p.abstract, *p.authors]) for p in ctx.data.papers]
        self.x = arxiv_sanity_features(corpus)

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        return arxiv_sanity_svm(self.x, case.train).decision_function(self.x[candidates])


def arxiv_sanity_features(texts: list[str]) -> Any:
    """arxiv-sanity-lite's tf-idf features of ``texts`` (a sparse float32 row per text)."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]

    vectorizer = TfidfVectorizer(
        strip_accents="unicode",
        lowercase=True,
        analyzer="word",
        stop_words="english",
        token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
        ngram_range=(1, 2),
        max_features=20_000,
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        sublinear_tf=True,
        max_df=0.5,
        min_df=5,
    )
    return vectorizer.fit_transform(texts).astype(np.float32).tocsr()


def arxiv_sanity_svm(features: Any, positives: Any) -> Any:
    """arxiv-sanity-lite's per-user SVM: every row, the user's ``positives`` against all others."""
    from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

    y = np.zeros(features.shape[0], np.float32)
    y[positives] = 1.0
    clf = LinearSVC(class_weight="balanced", max_iter=10_000, tol=1e-6, C=0.01)
    return clf.fit(features, y)


class ZoteroArxivDaily:
    """TideDra/zotero-arxiv-daily: mean cosine to the library, weighted by recency of addition.

    Weights 1/(1+log10(rank+1)) with rank 0 the newest paper, normalised to sum 1; without
    timestamps every paper weighs the same.
    """

    name = "zotero-arxiv-daily"

    def fit(self, ctx: Context) -> None:
        self.vectors = ctx.vectors
        self.timestamped = ctx.data.timestamped

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        library = case.train[::-1]  # newest first
        if self.timestamped:
            weights = 1 / (1 + np.log10(np.arange(len(library)) + 1))
        else:
            weights = np.ones(len(library))
        weights = weights / weights.sum()
        return (self.vectors[candidates] @ self.vectors[library].T) @ weights


class Centroid:
    """Cosine to the normalised mean of the library's vectors (the classic profile vector)."""

    name = "centroid"

    def fit(self, ctx: Context) -> None:
        self.vectors = ctx.vectors

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        centroid = self.vectors[case.train].mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        return self.vectors[candidates] @ centroid


class ScholarInbox:
    """Scholar Inbox style: per-user logistic regression on embeddings, random papers as negatives.

    Negatives are drawn at random from papers the user has not saved (``NEGATIVES`` per positive,
    at least ``MIN_NEGATIVES``), balanced class weights, sklearn's default L2 (C=1).
    """

    name = "scholar-inbox"
    NEGATIVES = 10
    MIN_NEGATIVES = 500

    def fit(self, ctx: Context) -> None:
        self.vectors = ctx.vectors
        self.pool = ctx.seen
        self.rng = np.random.default_rng(ctx.seed)

    def scores(self, case: Case, candidates: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        pool = np.setdiff1d(self.pool, case.train)
        n_neg = min(len(pool), max(self.MIN_NEGATIVES, self.NEGATIVES * len(case.train)))
        negatives = self.rng.choice(pool, n_neg, replace=False)
        x = self.vectors[np.concatenate([case.train, negatives])]
        y = np.r_[np.ones(len(case.train)), np.zeros(n_neg)]
        clf = LogisticRegression(class_weight="balanced", max_iter=1_000)
        clf.fit(x, y)
        return clf.decision_function(self.vectors[candidates])


def peers() -> list[Method]:
    return [MostSaved(), ArxivSanityLite(), ZoteroArxivDaily(), Centroid(), ScholarInbox()]
