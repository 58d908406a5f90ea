"""Offline evaluation (`paperwire eval`): protocols, metrics, the embedding cache, the report.

A dataset is a folder in the schema of the README's "Recommendation quality" (``papers.jsonl``,
``interactions.csv``). paperwire is scored through the production ranking code
(``ranking.rank``), the peers through ``peers.py``; every method sees the same split, the same
candidates and the same embeddings.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from paperwire_recommend import ranking
from paperwire_recommend.collaborative import CoSaves, Nearest
from paperwire_recommend.recommender import API_REFERENCE_PAPERS, Profile, api_candidates

log = logging.getLogger(__name__)

EvalProtocol = Literal["warm", "cold"]
KS = (10, 50)
# Share of a library (warm) or of the papers (cold) held out, and the smallest library (warm).
HELD_OUT = 0.2
MIN_LIBRARY = 10


class EvalError(Exception):
    """A dataset problem the user can fix (missing file, bad header)."""


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    published: str | None = None

    @property
    def text(self) -> str:
        """What production embeds (PaperIngested.text): title, then the abstract when there is one."""
        return f"{self.title}\n{self.abstract}" if self.abstract else self.title


@dataclass
class Dataset:
    papers: list[Paper]
    # user id -> saved paper indices, oldest first when the file has timestamps (else file order)
    libraries: dict[str, list[int]]
    # user id -> disliked paper indices (rating -1)
    dislikes: dict[str, list[int]] = field(default_factory=dict)
    timestamped: bool = False

    @property
    def index(self) -> dict[str, int]:
        return {p.id: i for i, p in enumerate(self.papers)}


def load_dataset(folder: Path) -> Dataset:
    papers_file, interactions_file = folder / "papers.jsonl", folder / "interactions.csv"
    for path in (papers_file, interactions_file):
        if not path.is_file():
            raise EvalError(
                f"{path} is missing: a dataset folder holds papers.jsonl and interactions.csv "
                "(README, Recommendation quality)"
            )
    papers = []
    with papers_file.open(encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                papers.append(
                    Paper(
                        id=str(row["id"]),
                        title=str(row["title"]),
                        abstract=str(row.get("abstract") or ""),
                        authors=tuple(row.get("authors") or ()),
                        categories=tuple(row.get("categories") or ()),
                        published=row.get("published"),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise EvalError(f"{papers_file}:{line_no}: {exc!r}") from exc
    index = {p.id: i for i, p in enumerate(papers)}
    saves: dict[str, list[tuple[str, int]]] = {}
    dislikes: dict[str, list[int]] = {}
    with interactions_file.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"user_id", "paper_id"} <= set(reader.fieldnames):
            raise EvalError(f"{interactions_file}: the header needs user_id,paper_id")
        timestamped = "timestamp" in reader.fieldnames
        for row in reader:
            paper = index.get(row["paper_id"])
            if paper is None:
                continue  # a save of a paper the dataset does not describe cannot be ranked
            if (row.get("rating") or "1").strip() == "-1":
                dislikes.setdefault(row["user_id"], []).append(paper)
            else:
                saves.setdefault(row["user_id"], []).append((row.get("timestamp") or "", paper))
    libraries = {}
    for user, items in saves.items():
        if timestamped:
            items = sorted(items, key=lambda item: item[0])  # ISO 8601 sorts as text
        libraries[user] = list(dict.fromkeys(paper for _, paper in items))
    return Dataset(papers, libraries, dislikes, timestamped)


# Splits


@dataclass(frozen=True)
class Case:
    """One evaluated user: what the ranker may learn from, what it must find, among what."""

    user: str
    train: np.ndarray  # paper indices the user saved (visible), oldest first
    held_out: frozenset[int]


@dataclass
class Split:
    protocol: EvalProtocol
    cases: list[Case]
    # Every user's visible saves (evaluated or not): what collaborative methods may learn from.
    visible: dict[str, np.ndarray]
    candidates: np.ndarray | None  # cold: the held-out papers; warm: None (all but the user's)
    hidden_papers: frozenset[int] = frozenset()  # cold: papers nobody may have seen


def split(data: Dataset, protocol: EvalProtocol, users: int | None, seed: int) -> Split:
    """The warm or cold split of ``data`` (seeded), with ``users`` evaluated users sampled."""
    rng = np.random.default_rng(seed)
    names = sorted(data.libraries)
    if protocol == "warm":
        visible, cases = {}, []
        for name in names:
            library = np.asarray(data.libraries[name])
            if len(library) < MIN_LIBRARY:
                visible[name] = library
                continue
            n_out = max(1, round(HELD_OUT * len(library)))
            out = rng.choice(len(library), n_out, replace=False)
            keep = np.ones(len(library), bool)
            keep[out] = False
            visible[name] = library[keep]
            cases.append(Case(name, library[keep], frozenset(library[out].tolist())))
        return Split("warm", _sample(cases, users, rng), visible, None)
    if protocol == "cold":
        n_papers = len(data.papers)
        hidden = rng.choice(n_papers, max(1, round(HELD_OUT * n_papers)), replace=False)
        is_hidden = np.zeros(n_papers, bool)
        is_hidden[hidden] = True
        visible, cases = {}, []
        for name in names:
            library = np.asarray(data.libraries[name])
            visible[name] = library[~is_hidden[library]]
            out = library[is_hidden[library]]
            if len(out) and len(visible[name]):
                cases.append(Case(name, visible[name], frozenset(out.tolist())))
        return Split(
            "cold", _sample(cases, users, rng), visible, np.sort(hidden), frozenset(hidden.tolist())
        )
    raise ValueError(f"unknown protocol {protocol!r}")


def cut_libraries(chosen: Split, size: int, seed: int) -> Split:
    """Each evaluated user keeps ``size`` papers of their visible library, drawn at random
    (seeded): the new users a service mostly has. The papers dropped are nobody's saves any more,
    so co-saves cannot bring them back."""
    rng = np.random.default_rng(seed)
    visible = dict(chosen.visible)
    cases = []
    for case in chosen.cases:
        kept = case.train[np.sort(rng.permutation(len(case.train))[:size])]
        visible[case.user] = kept
        cases.append(replace(case, train=kept))
    return replace(chosen, cases=cases, visible=visible)


def _sample(cases: list[Case], users: int | None, rng: np.random.Generator) -> list[Case]:
    if users is None or users >= len(cases):
        return cases
    picked = rng.choice(len(cases), users, replace=False)
    return [cases[i] for i in sorted(picked)]


# Metrics


def recall_at(ranked: Sequence[int], relevant: frozenset[int], k: int) -> float:
    """Share of the relevant papers found in the first ``k``."""
    if not relevant:
        return 0.0
    return sum(1 for p in ranked[:k] if p in relevant) / len(relevant)


def ndcg_at(ranked: Sequence[int], relevant: frozenset[int], k: int) -> float:
    """Binary-relevance nDCG: DCG of the first ``k`` over the DCG of a perfect list."""
    dcg = sum(1 / np.log2(i + 2) for i, p in enumerate(ranked[:k]) if p in relevant)
    ideal = sum(1 / np.log2(i + 2) for i in range(min(k, len(relevant))))
    return float(dcg / ideal) if ideal else 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties: lower index first)."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


# Embeddings, cached on disk by model and text


class Encoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "paperwire"


class EmbeddingCache:
    """Vectors by (model, sha256 of text), in .npz chunks under ``root/embeddings/<model>/``.

    Chunks are written as they are encoded, so an interrupted run keeps what it paid for.
    """

    CHUNK = 512

    def __init__(self, root: Path, encoder: Encoder) -> None:
        self.encoder = encoder
        self.dir = root / "embeddings" / re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)

    def _load(self) -> dict[bytes, np.ndarray]:
        known: dict[bytes, np.ndarray] = {}
        for path in sorted(self.dir.glob("*.npz")):
            with np.load(path) as chunk:
                known.update(zip(chunk["keys"].tolist(), chunk["vectors"], strict=True))
        return known

    def vectors(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        keys = [hashlib.sha256(t.encode()).hexdigest().encode() for t in texts]
        known = self._load()
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            self.dir.mkdir(parents=True, exist_ok=True)
            text_of = dict(zip(keys, texts, strict=True))
            # Similar lengths in one chunk pad less: titles alone encode ~8x faster than abstracts.
            missing.sort(key=lambda k: len(text_of[k]))
            for start in range(0, len(missing), self.CHUNK):
                chunk = missing[start : start + self.CHUNK]
                encoded = np.asarray(self.encoder.encode([text_of[k] for k in chunk]), np.float32)
                name = hashlib.sha256(b"".join(chunk)).hexdigest()[:16]
                np.savez(self.dir / f"{name}.npz", keys=np.asarray(chunk), vectors=encoded)
                known.update(zip(chunk, encoded, strict=True))
                if progress:
                    progress(start + len(chunk), len(missing))
        return np.stack([known[k] for k in keys]).astype(np.float32)


def paper_vectors(data: Dataset, cache: EmbeddingCache, **kwargs: Any) -> np.ndarray:
    return cache.vectors([p.text for p in data.papers], **kwargs)


# Running methods over a split


@dataclass
class Context:
    """What a method may learn from: the dataset, the split, and unit paper vectors (rows)."""

    data: Dataset
    split: Split
    vectors: np.ndarray
    seed: int = 0

    @property
    def seen(self) -> np.ndarray:
        """Indices of the papers that exist before the test (cold: all but the held-out ones)."""
        mask = np.ones(len(self.data.papers), bool)
        mask[list(self.split.hidden_papers)] = False
        return np.flatnonzero(mask)


class Ranker(Protocol):
    name: str

    def fit(self, ctx: Context) -> None: ...

    def ranked(self, case: Case, candidates: np.ndarray, k: int) -> np.ndarray:
        """The best ``k`` candidate paper indices, best first."""
        ...


class Paperwire:
    """paperwire as it runs in production: ``ranking.rank`` over the user's library as evidence.

    The whitened space is fitted on the papers that exist before the test, and co-saves are learnt
    from every user's visible saves (a live deployment's feedback). In the cold protocol no
    held-out paper has a save of its own, but co-saves of the older papers most like it are
    carried to it (``CoSaves.carried``). ``content_only`` leaves other users' saves out
    altogether: the user's own library and the papers' text, nothing else.

    ``api``: rank what the REST API ranks instead of every candidate: the candidates its searches
    and co-saves find (``recommender.api_candidates``, the vector search done exactly over the
    candidates), with ``API_REFERENCE_PAPERS`` papers drawn at random from those that exist
    before the test setting the scales, never shown.
    """

    name = "paperwire"

    def __init__(
        self, knobs: ranking.Knobs | None = None, content_only: bool = False, api: bool = False
    ) -> None:
        self.knobs = knobs or ranking.Knobs()
        self.content_only = content_only
        self.api = api
        if api:
            self.name = "paperwire (API)"

    def fit(self, ctx: Context) -> None:
        self.ids = [p.id for p in ctx.data.papers]
        self.titles = [p.title for p in ctx.data.papers]
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        self.space = ranking.Space.fit(ctx.vectors[ctx.seen])
        # Whiten every paper once rather than per user (rank() would do the same per call).
        self.raw = ctx.vectors
        self.vectors = self.space.apply(ctx.vectors) if self.space else ctx.vectors
        visible = () if self.content_only else ctx.split.visible.items()
        self.cosaves = CoSaves((user, self.ids[i]) for user, library in visible for i in library)
        nearest = Nearest()
        nearest.sync({p: self.raw[self.index[p]] for p in self.cosaves.ids})
        self.cosaves.attach(nearest)
        self.dislikes = ctx.data.dislikes
        # As recommend draws them when it fits the space (``Recommender._fit_space``).
        drawn = np.random.default_rng(0).permutation(len(ctx.seen))[:API_REFERENCE_PAPERS]
        self.reference = ctx.seen[np.sort(drawn)]

    def ranked(self, case: Case, candidates: np.ndarray, k: int) -> np.ndarray:
        library = [self.ids[i] for i in case.train]
        evidence = [
            ranking.Evidence(
                "", self.raw[i], seed_title=self.titles[i], kind="saved", paper_id=self.ids[i]
            )
            for i in case.train
        ]
        disliked = self.dislikes.get(case.user, [])
        exclude = frozenset(self.ids[i] for i in disliked)
        collaborative_scale = None
        scale_rows = None
        if self.api:  # as Recommender._rank ranks them
            candidates, scale_only = self._api_candidates(case, candidates, k, library, exclude)
            exclude |= {self.ids[i] for i in scale_only}
            candidates = np.concatenate([candidates, scale_only])
            scale_rows = np.isin(candidates, self.reference)
            if len(self.cosaves):
                collaborative_scale = self.cosaves.corpus_scale(library, len(self.ids))
        candidate_ids = [self.ids[i] for i in candidates]
        carried, crowding = self.cosaves.carried(
            library, candidate_ids, self.raw[candidates], self.raw[case.train], k
        ) or (None, None)
        found = ranking.rank(
            evidence,
            candidate_ids,
            self.raw[candidates],
            k=k,
            space=self.space,
            whitened=self.vectors[candidates] if self.space else None,
            collaborative=self.cosaves.scores(library, candidate_ids),
            collaborative_scale=collaborative_scale,
            carried=carried,
            crowding=crowding,
            dislikes=self.raw[disliked] if disliked else None,
            exclude=exclude,
            knobs=self.knobs,
            scale_rows=scale_rows,
        )
        return np.asarray([self.index[r.paper_id] for r in found], dtype=int)

    def _api_candidates(
        self, case: Case, pool: np.ndarray, k: int, library: list[str], exclude: frozenset[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The candidates of ``pool`` the API would rank for this user, and the reference papers
        it would not find."""
        searchable = np.asarray([self.ids[i] not in exclude for i in pool], bool)
        raw_pool = self.raw[pool]

        def search(query: np.ndarray, limit: int) -> list[str]:
            scores = np.where(searchable, raw_pool @ query, -np.inf)
            best = top_k(scores, min(limit, int(searchable.sum())))
            return [self.ids[pool[i]] for i in best]

        profile = Profile(
            evidence=[
                ranking.Evidence("", self.raw[i], kind="saved", paper_id=self.ids[i])
                for i in case.train
            ],
            dislikes=None,
            rules={},
            knobs=self.knobs,
            library=library,
            exclude=exclude | set(library),
        )
        in_pool = set(pool.tolist())
        found = [
            i
            for p in api_candidates(profile, k, self.cosaves, search)
            if (i := self.index[p]) in in_pool
        ]
        taken = set(found)  # the user's own papers among them too, as in recommend: never shown
        scale_only = [i for i in self.reference.tolist() if i not in taken]
        return np.asarray(found, dtype=int), np.asarray(scale_only, dtype=int)


class ScoredRanker:
    """A method that scores every candidate (the peers), ranked by score."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.name = method.name

    def fit(self, ctx: Context) -> None:
        self.method.fit(ctx)

    def ranked(self, case: Case, candidates: np.ndarray, k: int) -> np.ndarray:
        return candidates[top_k(np.asarray(self.method.scores(case, candidates)), k)]


def candidates_of(split: Split, case: Case, n_papers: int) -> np.ndarray:
    """Warm: every paper the user has not saved (visibly); cold: the held-out papers."""
    if split.candidates is not None:
        return split.candidates
    mask = np.ones(n_papers, bool)
    mask[case.train] = False
    return np.flatnonzero(mask)


def score_method(method: Ranker, split: Split, n_papers: int) -> dict[str, float]:
    """Mean Recall@10, Recall@50 and nDCG@10 of ``method`` over the split's users."""
    totals = {"recall@10": 0.0, "recall@50": 0.0, "ndcg@10": 0.0}
    for case in split.cases:
        ranked = method.ranked(case, candidates_of(split, case, n_papers), max(KS)).tolist()
        totals["recall@10"] += recall_at(ranked, case.held_out, 10)
        totals["recall@50"] += recall_at(ranked, case.held_out, 50)
        totals["ndcg@10"] += ndcg_at(ranked, case.held_out, 10)
    n = max(1, len(split.cases))
    return {name: round(value / n, 4) for name, value in totals.items()}


def evaluate(
    data: Dataset,
    vectors: np.ndarray,
    protocol: EvalProtocol,
    *,
    users: int | None = None,
    seed: int = 0,
    methods: Sequence[Ranker] | None = None,
    content_only: bool = False,
    api: bool = False,
    library: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{"protocol", "users", "methods": {name: {"recall@10", "recall@50", "ndcg@10"}}}``.

    ``content_only``: paperwire learns nothing from other users' saves; ``api``: paperwire is
    also scored as the REST API ranks, "paperwire (API)" (see ``Paperwire``); ``library``: each
    evaluated user keeps that many papers of their library (``cut_libraries``).
    """
    if methods is None:
        from paperwire_recommend.peers import peers

        ours = [Paperwire(content_only=content_only)]
        if api:
            ours.append(Paperwire(content_only=content_only, api=True))
        methods = [*ours, *(ScoredRanker(m) for m in peers())]
    chosen = split(data, protocol, users, seed)
    if library is not None:
        chosen = cut_libraries(chosen, library, seed)
    ctx = Context(data, chosen, vectors, seed)
    results = {}
    for method in methods:
        if progress:
            progress(f"{method.name}: {len(chosen.cases)} users")
        method.fit(ctx)
        results[method.name] = score_method(method, chosen, len(data.papers))
    return {"protocol": protocol, "users": len(chosen.cases), "methods": results}


def table(report: dict[str, Any]) -> str:
    """The report as an aligned text table, paperwire first, with its gain over the best peer."""
    methods = report["methods"]
    metrics = ("recall@10", "recall@50", "ndcg@10")
    width = max(len(name) for name in methods) + 2
    lines = [
        f"protocol {report['protocol']}, {report['users']} users",
        "method".ljust(width) + "".join(m.rjust(11) for m in metrics),
    ]
    for name, values in methods.items():
        lines.append(name.ljust(width) + "".join(f"{values[m]:11.4f}" for m in metrics))
    peers = [v for name, v in methods.items() if not name.startswith("paperwire")]
    for ours, label in (("paperwire", "vs best peer"), ("paperwire (API)", "API vs best peer")):
        if ours in methods and peers:
            gains = []
            for m in metrics:
                best = max(p[m] for p in peers)
                gains.append(f"{100 * (methods[ours][m] / best - 1):+10.1f}%" if best else "")
            lines.append(label.ljust(width) + "".join(g.rjust(11) for g in gains))
    return "\n".join(lines)


def run(
    data_dir: Path,
    protocol: EvalProtocol = "warm",
    *,
    users: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    encoder: Encoder | None = None,
    content_only: bool = False,
    api: bool = False,
    library: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``paperwire eval``: load ``data_dir``, embed (cached), evaluate every method."""
    data = load_dataset(data_dir)
    if encoder is None:
        from paperwire_embed.encoder import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(os.environ.get("EMBED_MODEL") or None)
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder)

    def embedded(done: int, total: int) -> None:
        if progress:
            progress(f"embedded {done}/{total} paper texts (cached in {cache.dir})")

    vectors = paper_vectors(data, cache, progress=embedded)
    return evaluate(
        data,
        vectors,
        protocol,
        users=users,
        seed=seed,
        content_only=content_only,
        api=api,
        library=library,
        progress=progress,
    )
