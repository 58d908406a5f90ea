"""Ranking papers for a user (pure): the one code path behind the API, the digests and `paperwire eval`.

A user's evidence is grouped by interest: an interest's free text, its seed papers, and the papers
the user liked, saved or opened. Each interest scores every candidate on its own (a user with two
unrelated interests gets both, not their average), then interests take turns filling the list.

How an interest scores a paper, and the measurement behind each choice (CiteULike-a, tuned on a
development split, seed 1; see README "Recommendation quality" and docs/ranking.md):

- **Relevance**: cosines in a whitened embedding space (``Space``), pooled over the interest's
  evidence with a soft maximum at temperature ``POOL_TEMPERATURE``. all-MiniLM-L6-v2 vectors share a
  few dominant directions, so every paper looks a bit like every other; whitening the corpus
  (shrinkage ``WHITENING_SHRINKAGE``; 0.1-1.0 all within 0.006) lifted cold-start nDCG@10 from 0.241
  to 0.298 and Recall@50 from 0.481 to 0.560. Temperature 0.4 scored nDCG@10 0.298, 0.2 scored
  0.284 and 0.8 0.297; the best single piece of evidence (the max) scored 0.192 and the library's
  mean (zotero-arxiv-daily) 0.216, both unwhitened. Whitening sharpens what many papers of
  evidence agree on and magnifies noise in what few papers say: an interest with ``n`` pieces of
  evidence is whitened with shrinkage ``WHITENING_SHRINKAGE`` × (1 + (``SMALL_EVIDENCE`` / n)²)
  (``Space.shrinkage_for``): ~120 for one seed paper (almost only centred), 5 for five, 0.6 for
  twenty. Development splits (seeds 1 and 2, 300 users), cold, each library cut to 1 / 2 / 5 / 10
  papers (``paperwire eval --library N``): Recall@50 0.267 / 0.359 / 0.477 / 0.551 -> 0.315 /
  0.405 / 0.499 / 0.561, nDCG@10 0.121 / 0.173 / 0.233 / 0.262 -> 0.132 / 0.187 / 0.242 / 0.269;
  whole libraries cold 0.587 / 0.296 -> 0.591 / 0.297, warm 0.432 / 0.205 -> 0.432 / 0.208.
- **Words**: a text interest also scores the share of its rarer words a paper uses (``terms``): the
  model alone ranks any "fine-tuning LLMs" paper above one about LoRA for an interest in
  "parameter-efficient fine-tuning (LoRA and adapters)"; on the seed page precision@5 went from 2/5
  (cosine alone) to 5/5 with a word weight of 0.2-0.3.
- **Co-saves** (``collaborative``, from ``collaborative.CoSaves``): what readers of the user's papers
  also saved. Weighted ``COLLABORATIVE_WEIGHT`` standard deviations of relevance per standard
  deviation of co-save score: 0.3-0.5 all gave warm Recall@50 0.418-0.423 (0 gave 0.323, 1.0 0.390,
  2.0 0.367). A library of more than ``LARGE_LIBRARY`` papers weighs them in proportion
  (``collaborative_weight``). A brand-new paper has no co-saves, so this never hides new work.
- **Carried co-saves** (``carried``, from ``collaborative.CoSaves.carried``): a brand-new paper has no
  savers, so co-saves are carried to it from the saved papers most like it; ``CARRIED_WEIGHT``
  standard deviations per standard deviation of log(1 + carried / its mean). With
  ``CROWDING_WEIGHT`` (papers that look like everybody's library move down), cold Recall@50 went
  from 0.560 to 0.585 and nDCG@10 from 0.298 to 0.310 on the development split (seed 2: 0.571 to
  0.590, 0.274 to 0.282); weights 0.4-0.6 and 0-0.4 were all within 0.01.
- **Per-user knobs** (``Knobs``): recency, popularity (trending) and diversity (MMR).
- **Dislikes** push papers close to them down; rules per interest (``Rules``) filter and boost.

Every term other than relevance is expressed in standard deviations of the interest's relevance over
the candidates, so a knob means the same whatever the size of the candidate set. Over a set already
narrowed to papers close to the user those scales shrink: the API adds a random sample of the
corpus to its candidates, excluded, to keep them (recommender.API_REFERENCE_PAPERS), and measures
relevance's spread over that sample alone (``scale_rows``): over the sample and the papers close to
the user together it came out about twice as wide as over the corpus. A paper's
reason names the piece of the user's own evidence that contributed most to its relevance.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

LEXICAL_WEIGHT = 0.25
POOL_TEMPERATURE = 0.4
WHITENING_SHRINKAGE = 0.3
# The evidence count at which an interest's shrinkage is twice WHITENING_SHRINKAGE
# (Space.shrinkage_for): 20 and 30 were tried on the development split; 20 kept whole libraries
# as good, warm and cold, where 30 cost warm Recall@50 0.004.
SMALL_EVIDENCE = 20.0
COLLABORATIVE_WEIGHT = 0.4
# Above this many papers of evidence, co-saves weigh in proportion: COLLABORATIVE_WEIGHT × n / 20
# (``collaborative_weight``). Development splits, warm, 300 users, seeds 1 / 2 / 3: Recall@50
# 0.433 / 0.431 / 0.431 -> 0.437 / 0.442 / 0.436, nDCG@10 0.206 / 0.210 / 0.226 -> 0.211 / 0.218 /
# 0.234; 15 or 30 instead of 20, or growing as the square root, within 0.004 of that.
LARGE_LIBRARY = 20.0
CARRIED_WEIGHT = 0.4
CROWDING_WEIGHT = 0.3
# A paper as close to a disliked paper as to the user's evidence loses half of its relevance. Not
# measured: the development data has no dislikes. Strong enough that a near-duplicate of a
# disliked paper (cosine ~1) falls below anything related to the user's evidence.
DISLIKE_WEIGHT = 0.5
# Boosts, in standard deviations of relevance: a paper by a followed author, or one mentioning an
# include keyword. Not measured (no authors or keyword lists in the development data): chosen so a
# moderately related paper by a followed author reaches a daily digest (its top ~0.5% of ~2,000
# papers sits ~2.6 standard deviations up) while an unrelated one does not.
AUTHOR_BOOST = 2.0
KEYWORD_BOOST = 1.0
# Evidence weights by kind: opening a paper says less than saving or liking it.
KIND_WEIGHTS = {"text": 1.0, "seed": 1.0, "liked": 1.0, "saved": 1.0, "clicked": 0.5}
# The smallest spread of relevance the other terms are measured in (cosine units).
_MIN_SPREAD = 0.01
# MMR looks at this many of an interest's best papers per paper asked for.
_MMR_POOL = 10

_WORD = re.compile(r"[a-z0-9]+")
# Bytes that are not [a-z0-9] become spaces (words_of).
_SEPARATE = bytes(c if chr(c) in "0123456789abcdefghijklmnopqrstuvwxyz" else 32 for c in range(256))
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


def terms(text: str) -> frozenset[str]:
    """Lower-cased words of three or more letters, stop words out, a plural 's' dropped: what an
    interest's text asks for (which papers use them: ``lexical_scores``)."""
    words = set(_WORD.findall(text.lower())) - _STOPWORDS
    return frozenset(
        word[:-1] if len(word) > 4 and word.endswith("s") else word
        for word in words
        if len(word) >= 3
    )


@dataclass(frozen=True)
class Evidence:
    """One piece of a user's evidence: an interest's text, or a paper they chose or reacted to.

    ``kind``: "text", "seed", "liked", "saved" or "clicked"; left empty it is "seed" when
    ``seed_title`` is given, else "text". ``seed_title`` is the paper's title for paper kinds.
    """

    interest: str
    vector: np.ndarray
    seed_title: str | None = None
    text: str | None = None  # the interest's text, for word matching
    kind: str = ""
    paper_id: str | None = None

    @property
    def source(self) -> str:
        return self.kind or ("seed" if self.seed_title is not None else "text")

    @property
    def weight(self) -> float:
        return KIND_WEIGHTS.get(self.source, 1.0)

    @property
    def reason(self) -> str:
        about = f' (interest "{self.interest}")' if self.interest else ""
        title = self.seed_title or self.paper_id or "a paper"
        match self.source:
            case "text":
                return f'matches your interest "{self.interest}"'
            case "seed":
                return f'close to your seed paper "{title}"{about}'
            case "liked":
                return f'you liked "{title}"{about}'
            case "saved":
                return f'you saved "{title}"{about}'
            case _:
                return f'you opened "{title}"{about}'


@dataclass(frozen=True)
class Rules:
    """An interest's filters and boosts. Keywords match whole words of the title and abstract,
    ignoring case; categories match exactly (e.g. "cs.CL"); authors match by full name, ignoring case.

    include_keywords boost (a paper may phrase the topic otherwise); include_categories restrict the
    interest to those categories; exclude_* remove; a followed author's paper is boosted.
    """

    include_keywords: tuple[str, ...] = ()
    exclude_keywords: tuple[str, ...] = ()
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(
            (
                self.include_keywords,
                self.exclude_keywords,
                self.include_categories,
                self.exclude_categories,
                self.authors,
            )
        )


@dataclass(frozen=True)
class Knobs:
    """A user's trade-offs, each in standard deviations of relevance (0 turns one off).

    recency: per standard deviation of (log) age, fresher first. Not measured (the development
    data has no dates); the default only breaks near-ties, since digests hold new papers anyway.
    popularity: per standard deviation of log trending popularity (payload ``popularity``). With
    save counts standing in for it, 0.1-0.2 changed warm nDCG@10 and Recall@50 by under 0.003:
    a tie-breaker.
    diversity: MMR: a paper's score minus ``diversity`` × its highest cosine to a paper already
    picked for the same interest. Off by default: on the development split 0.1 left the top 10
    unchanged in quality (cold nDCG@10 0.298 -> 0.299, warm 0.204 -> 0.204) but cost Recall@50
    (cold 0.560 -> 0.538, warm 0.422 -> 0.415; 0.2: cold 0.487). Interests taking turns already
    keep one topic from filling the list.
    """

    recency: float = 0.1
    popularity: float = 0.1
    diversity: float = 0.0


@dataclass(frozen=True)
class Facts:
    """What is known about the candidates besides text, one entry per candidate (None: unknown)."""

    categories: Sequence[Sequence[str]] | None = None
    authors: Sequence[Sequence[str]] | None = None
    published: np.ndarray | None = None  # unix seconds, NaN when unknown
    popularity: np.ndarray | None = None  # trending score, NaN when unknown


@dataclass(frozen=True)
class Space:
    """A whitened embedding space: centred on the corpus mean, each direction rescaled by its spread.

    ``fit`` shrinks the covariance towards its mean eigenvalue (``WHITENING_SHRINKAGE``), so rare
    directions are not blown up into noise.
    """

    mean: np.ndarray
    transform: np.ndarray
    # The covariance's eigenvalues (``transform``'s columns) and the shrinkage ``transform`` used:
    # what ``rescale`` needs to whiten with another shrinkage.
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shrinkage: float = WHITENING_SHRINKAGE

    # Fewer papers than this per dimension give a covariance too noisy to whiten with.
    MIN_PAPERS_PER_DIM = 2

    @classmethod
    def fit(cls, vectors: np.ndarray, shrinkage: float = WHITENING_SHRINKAGE) -> Space | None:
        """The space of a corpus sample (rows), or None when the sample is too small."""
        n, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
        if n < cls.MIN_PAPERS_PER_DIM * dim or dim == 0:
            return None
        x = vectors.astype(np.float64)
        mean = x.mean(axis=0)
        eigenvalues, basis = np.linalg.eigh(np.cov((x - mean).T))
        eigenvalues = np.maximum(eigenvalues, 0)
        transform = basis / np.sqrt(eigenvalues + shrinkage * eigenvalues.mean())
        return cls(mean.astype(np.float32), transform.astype(np.float32), eigenvalues, shrinkage)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return _unit_rows((np.asarray(vectors, np.float32) - self.mean) @ self.transform)

    @staticmethod
    def shrinkage_for(evidence: int) -> float:
        """The shrinkage for an interest with this many pieces of evidence (module docstring)."""
        return WHITENING_SHRINKAGE * (1 + (SMALL_EVIDENCE / max(evidence, 1)) ** 2)

    def rescale(self, shrinkage: float) -> np.ndarray | None:
        """Per coordinate of ``apply``'s rows, the factor that whitens them with ``shrinkage``
        instead (the rows made unit again after), or None where nothing would change."""
        if not len(self.eigenvalues) or np.isclose(shrinkage, self.shrinkage):
            return None
        floor = self.eigenvalues.mean()
        fitted = self.eigenvalues + self.shrinkage * floor
        return np.sqrt(fitted / (self.eigenvalues + shrinkage * floor)).astype(np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class Ranked:
    paper_id: str
    score: float
    reason: str
    interest: str = ""


@dataclass
class _Interest:
    name: str
    rows: np.ndarray  # evidence rows
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_row: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # Extra reasons by candidate column (most candidates have none).
    extras: defaultdict[int, list[str]] = field(default_factory=lambda: defaultdict(list))


# The words of a text: the hashes (Python's ``hash``, the same within one process; never stored)
# of its distinct words, as an int64 array. An arXiv title and abstract's take ~1.1 KB where a
# set of the words took ~10 KB, so recommend holds every stored paper's (``catalogue``), and no
# object in it is one the garbage collector walks (frozensets in an lru_cache made each full
# collection take ~60 ms per 200k texts, ~200 ms stalls in requests: bench/README.md).
Words = np.ndarray
_WORDS: dict[str, Words] = {}
_WORDS_LOCK = threading.Lock()
# Texts whose words are kept, first seen first out: digests rank the same day's papers for every
# user, and ``paperwire eval`` the same corpus. ~2.5 KB each with the text (the key): ~75 MB.
WORDS_CACHED = 30_000


def word_hashes(words: Iterable[str]) -> Words:
    """The ``Words`` of these (distinct) words."""
    distinct = set(words)
    return np.fromiter(map(hash, distinct), np.int64, len(distinct))


def text_words(text: str) -> Words:
    """The lower-cased words of a paper's text (``Words``), not cached (``words_of`` is).

    The same words as ``_WORD`` finds in the lower-cased text, split by a byte table instead of the
    regular expression (1.5x faster): any other character, non-ASCII included, separates words.
    """
    ascii_text = text.lower().encode("ascii", "replace").translate(_SEPARATE)
    return word_hashes(ascii_text.decode("ascii").split())


def words_of(text: str) -> Words:
    """``text_words``, cached (``WORDS_CACHED``)."""
    words = _WORDS.get(text)
    if words is None:
        words = text_words(text)
        with _WORDS_LOCK:  # requests rank in threads
            while len(_WORDS) >= WORDS_CACHED:
                del _WORDS[next(iter(_WORDS))]
            _WORDS[text] = words
    return words


# Slots of the table ``_found`` looks words up in: a few dozen wanted words rarely share one.
_SLOTS = 1 << 16


@dataclass(frozen=True)
class WordIndex:
    """Which texts hold each word, for texts matched again and again (a scheduler tick's papers,
    for each of its digests): each wanted word is looked up instead of every text's words being
    scanned again (``_found``: ~8 ms per interest with text at 2,000 arXiv texts)."""

    hashes: np.ndarray  # the word hash of each (word, text) pair, sorted
    texts: np.ndarray  # the text of each pair, in that order
    size: int  # texts indexed
    columns: np.ndarray | None = None  # the indexed texts that are the words, in order (None: all)

    @classmethod
    def of(cls, docs: Sequence[Words]) -> WordIndex:
        flat = np.concatenate(docs) if len(docs) else np.zeros(0, np.int64)
        texts = np.repeat(np.arange(len(docs)), np.fromiter(map(len, docs), np.intp, len(docs)))
        order = np.argsort(flat, kind="stable")
        return cls(flat[order], texts[order], len(docs))

    def select(self, columns: Sequence[int] | np.ndarray) -> WordIndex:
        """The index of these texts (positions in the words it stands for), in that order."""
        at = np.asarray(columns, np.intp)
        return replace(self, columns=at if self.columns is None else self.columns[at])

    def found(self, rows: Mapping[int, int], n: int) -> np.ndarray:
        """``_found`` of the words this index stands for."""
        found = np.zeros((n, self.size), bool)
        keys = np.fromiter(rows, np.int64, len(rows))
        first = np.searchsorted(self.hashes, keys, "left")
        last = np.searchsorted(self.hashes, keys, "right")
        for row, start, end in zip(rows.values(), first, last, strict=True):
            found[row, self.texts[start:end]] = True
        return found if self.columns is None else found[:, self.columns]


def _found(
    docs: Sequence[Words], rows: Mapping[int, int], n: int, index: WordIndex | None = None
) -> np.ndarray:
    """An ``n`` × text boolean matrix: row ``rows[h]`` is set for each text holding word hash ``h``.

    Each of the texts' words is looked up in a table of the wanted hashes by its low bits, then
    compared whole: matching an interest's terms against 2,000 arXiv texts (250k words) took
    8.1 ms (median, standalone), against 11.4 ms by binary search (``np.searchsorted``, kept for
    wanted hashes that share low bits). With ``index`` (the texts' ``WordIndex``): a lookup."""
    if index is not None:
        return index.found(rows, n)
    found = np.zeros((n, len(docs)), bool)
    if not rows or not docs:
        return found
    keys = np.fromiter(rows, np.int64, len(rows))
    values = np.fromiter(rows.values(), np.intp, len(rows))
    flat = np.concatenate(docs)
    slots = keys & (_SLOTS - 1)
    if len(np.unique(slots)) == len(keys):
        table = np.full(_SLOTS, -1, np.intp)
        table[slots] = np.arange(len(keys))
        at = table[flat & (_SLOTS - 1)]
        hit = at >= 0
        hit[hit] = keys[at[hit]] == flat[hit]
    else:
        order = np.argsort(keys)
        keys, values = keys[order], values[order]
        at = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
        hit = keys[at] == flat
    cols = np.repeat(np.arange(len(docs)), np.fromiter(map(len, docs), np.intp, len(docs)))
    found[values[at[hit]], cols[hit]] = True
    return found


def _used(
    docs: Sequence[Words], wanted: Sequence[str], index: WordIndex | None = None
) -> np.ndarray:
    """A term × text matrix: whether each text (its ``words_of``) uses each of ``wanted``, as it
    is or in the plural: the same as ``term in terms(text)``, without building each text's terms.
    One pass over all the texts' words (a pass over the texts per term cost ~4 ms of a request)."""
    rows: dict[int, int] = {}
    for i, term in enumerate(wanted):
        rows[hash(term)] = i
        if len(term) >= 4:  # ``terms`` drops the plural 's' of words of five letters or more
            rows[hash(term + "s")] = i
    return _found(docs, rows, len(wanted), index)


def _mentioning(docs: Sequence[Words], keyword: str, index: WordIndex | None = None) -> np.ndarray:
    """Per text: whether it holds every word of ``keyword`` (whole words, ignoring case)."""
    wanted = list(dict.fromkeys(_WORD.findall(keyword.lower())))
    if not wanted:
        return np.zeros(len(docs), bool)
    found = _found(docs, {hash(w): i for i, w in enumerate(wanted)}, len(wanted), index)
    return np.asarray(found.all(axis=0))


@dataclass(frozen=True)
class Matches:
    """Which of an interest text's terms each paper uses: ``terms`` rarest first, ``found`` a
    term × paper boolean matrix in that order."""

    terms: tuple[str, ...]
    found: np.ndarray

    def of(self, col: int) -> list[str]:
        """The terms paper ``col`` uses, rarest first."""
        return [self.terms[i] for i in np.flatnonzero(self.found[:, col])]


def lexical_scores(
    evidence: Sequence[Evidence], docs: Sequence[Words], index: WordIndex | None = None
) -> tuple[np.ndarray, list[Matches | None]]:
    """Per evidence × paper (its ``words_of``): idf-weighted share of the evidence's terms in the
    paper, and which (None for evidence without text, such as a library's papers). ``index``:
    ``docs``' ``WordIndex``, where the caller keeps one."""
    n = len(docs)
    scores = np.zeros((len(evidence), n), dtype=np.float32)
    matched: list[Matches | None] = [None] * len(evidence)
    for row, item in enumerate(evidence):
        if item.text is None:
            continue
        wanted = sorted(terms(item.text))
        found = _used(docs, wanted, index)
        idf = np.log((n + 1) / (found.sum(axis=1) + 1)) + 1e-6
        order = np.argsort(-idf, kind="stable")  # rarest first, ties by name
        matched[row] = Matches(tuple(wanted[i] for i in order), found[order])
        total = idf.sum()
        if total:
            scores[row] = (idf @ found) / total
    return scores, matched


def collaborative_weight(evidence: Sequence[Evidence]) -> float:
    """How much co-saves weigh for this evidence: ``COLLABORATIVE_WEIGHT``, in proportion to the
    papers of evidence above ``LARGE_LIBRARY`` of them. The more papers a library holds, the more
    its readers' other saves say (they agree over many papers) and the less a soft maximum of
    cosines over a broad library does: for libraries of 40-80 papers co-saves at weight 0.4 scored
    warm Recall@50 0.34-0.37 and at 1.2 0.34-0.40, for 80 or more 0.31-0.32 and 0.34-0.38, while
    under 20 papers 0.4 stayed best. Over 150 users with 80-322 papers (seeds 1 / 2): Recall@50
    0.375 / 0.380 -> 0.396 / 0.409, nDCG@10 0.437 / 0.448 -> 0.461 / 0.480; the weight held at 80
    or 160 papers' worth, within 0.005 of that. The API's candidates are mostly co-saved papers
    already (``recommender.api_candidates``): there the rule moved nothing beyond noise (seeds
    1 / 2, Recall@50 0.413 / 0.431 -> 0.410 / 0.431, before relevance's spread was measured over
    the API's random sample, ``scale_rows``)."""
    papers = len({e.paper_id for e in evidence if e.paper_id})
    return COLLABORATIVE_WEIGHT * max(1.0, papers / LARGE_LIBRARY)


def _standardised(values: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
    """(x - mean) / std over the candidates, or with ``scale``'s (mean, std); unknown (NaN) values
    and a constant signal give 0."""
    values = np.asarray(values, np.float64)
    known = np.isfinite(values)
    if scale is not None:
        mean, std = scale
    elif known.sum() < 2:
        return np.zeros(len(values))
    else:
        mean, std = values[known].mean(), values[known].std()
    if std <= 1e-12:
        return np.zeros(len(values))
    return np.where(known, (values - mean) / std, 0.0)


def rank(
    evidence: Sequence[Evidence],
    paper_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    k: int,
    texts: Sequence[str] | None = None,
    words: Sequence[Words] | None = None,
    word_index: WordIndex | None = None,
    min_score: float = -1.0,
    exclude: frozenset[str] | set[str] = frozenset(),
    lexical_weight: float = LEXICAL_WEIGHT,
    space: Space | None = None,
    whitened: np.ndarray | None = None,
    collaborative: np.ndarray | None = None,
    collaborative_scale: tuple[float, float] | None = None,
    carried: np.ndarray | None = None,
    crowding: np.ndarray | None = None,
    dislikes: np.ndarray | None = None,
    facts: Facts | None = None,
    rules: Mapping[str, Rules] | None = None,
    knobs: Knobs = Knobs(),  # noqa: B008 - frozen
    now: float | None = None,
    scale_rows: np.ndarray | None = None,
) -> list[Ranked]:
    """The ``k`` best papers among ``paper_ids`` (rows of unit ``vectors``), best first.

    ``space``: whiten evidence, papers and dislikes before comparing, each interest with the
    shrinkage its amount of evidence calls for (``Space.shrinkage_for``; None: plain cosine);
    ``whitened``: ``space.apply(vectors)``, where the caller keeps it
    (``Candidates.in_space``). ``texts`` (title and abstract per paper) turn on word matching and
    keyword rules; ``words``, each text's ``words_of``, where the caller holds them, stand for
    ``texts``, and ``word_index``, their ``WordIndex``, where the caller keeps one.
    ``collaborative``: a co-save score per paper, standardised with ``collaborative_scale``, its
    mean and std over the whole corpus (``CoSaves.corpus_scale``), where given: a bounded set of
    candidates is mostly co-saved with the user's library, the corpus mostly not; ``carried`` and ``crowding``: co-saves carried to
    each paper from the saved papers most like it, and its mean cosine to them
    (``CoSaves.carried``). ``dislikes``: vectors of disliked papers (rows).
    ``scale_rows``: a mask of the candidates drawn at random from the corpus (the API's reference
    papers, ``recommender.API_REFERENCE_PAPERS``): relevance's spread is measured over them alone,
    as over every paper, not over a set mostly close to the user. ``min_score``: a paper whose
    best raw cosine (plus words) to an interest's evidence is below it is not worth showing for
    that interest. ``now``: unix seconds, for recency (default: the newest
    candidate's date).
    """
    if not evidence or not len(paper_ids):
        return []
    n = len(paper_ids)
    raw_evidence = np.stack([e.vector for e in evidence]).astype(np.float32)
    if space is None:
        papers = np.asarray(vectors, np.float32)
    else:
        papers = space.apply(vectors) if whitened is None else whitened
    ev = space.apply(raw_evidence) if space else raw_evidence
    matched = None
    lexical = None
    worded = lexical_weight and any(e.text for e in evidence)
    keyworded = rules and any(r.include_keywords or r.exclude_keywords for r in rules.values())
    if words is None and texts is not None and (worded or keyworded):
        words = [words_of(t) for t in texts]
    if words is not None and worded:
        lexical, matched = lexical_scores(evidence, words, word_index)
    gate = None
    if min_score > -1.0:
        gate = raw_evidence @ np.asarray(vectors, np.float32).T
        if lexical is not None:
            gate = gate + lexical_weight * lexical

    # Signals shared by every interest, standardised over the candidates.
    shared = np.zeros(n)
    cf_z = None
    if collaborative is not None and COLLABORATIVE_WEIGHT:
        cf_z = _standardised(collaborative, collaborative_scale)
        shared += collaborative_weight(evidence) * cf_z
    carried_z = None
    if carried is not None and CARRIED_WEIGHT:
        carried = np.maximum(np.asarray(carried, np.float64), 0)  # NaN (unknown) stays NaN
        scale = float(np.nanmean(carried)) if np.isfinite(carried).any() else 0.0
        carried_z = _standardised(np.log1p(carried / max(scale, 1e-12)))
        shared += CARRIED_WEIGHT * carried_z
    if crowding is not None and CROWDING_WEIGHT:
        shared -= CROWDING_WEIGHT * _standardised(crowding)
    if facts is not None and facts.popularity is not None and knobs.popularity:
        shared += knobs.popularity * _standardised(np.log1p(np.maximum(facts.popularity, 0)))
    if facts is not None and facts.published is not None and knobs.recency:
        published = np.asarray(facts.published, np.float64)
        if now is None and np.isfinite(published).any():
            now = float(np.nanmax(published))
        if now is not None:
            age_days = np.maximum(now - published, 0) / 86_400
            shared += knobs.recency * _standardised(-np.log1p(age_days))
    penalty = np.zeros(n)
    if dislikes is not None and len(dislikes):
        disliked = space.apply(dislikes) if space else np.asarray(dislikes, np.float32)
        penalty = DISLIKE_WEIGHT * np.maximum((disliked @ papers.T).max(axis=0), 0)

    if scale_rows is not None and scale_rows.sum() < 2:
        scale_rows = None  # too few to measure a spread over: all the candidates, as without
    blocked = np.fromiter((p in exclude for p in paper_ids), bool, n)
    squared = None  # papers², once, for the interests whose cosines are rescaled
    interests = []
    for name in dict.fromkeys(e.interest for e in evidence):
        rows = np.asarray([i for i, e in enumerate(evidence) if e.interest == name])
        weights = np.asarray([evidence[i].weight for i in rows])[:, None]
        # Cosines in the space whitened for this much evidence (Space.shrinkage_for).
        factor = space.rescale(space.shrinkage_for(len(rows))) if space else None
        if factor is None:
            block = ev[rows] @ papers.T
        else:
            # unit(e·f) · unit(p·f) without a rescaled copy of every paper: |p·f|² = p² · f².
            if squared is None:
                squared = papers * papers
            norms = np.sqrt(squared @ (factor * factor))
            block = ((_unit_rows(ev[rows] * factor) * factor) @ papers.T) / np.where(
                norms > 0, norms, 1.0
            )
        if lexical is not None:
            block = block + lexical_weight * lexical[rows]
        top = block.max(axis=0)
        # Soft maximum: top + T·log(weighted mean of exp((s - top)/T)); exact max as T -> 0.
        shifted = np.exp((block - top) / POOL_TEMPERATURE) * weights
        relevance = top + POOL_TEMPERATURE * np.log(shifted.sum(axis=0) / weights.sum())
        # Floored, so the knobs still break ties among papers of equal relevance.
        sample = relevance if scale_rows is None else relevance[scale_rows]
        spread = max(float(sample.std()), _MIN_SPREAD)
        interest = _Interest(name, rows)
        interest.best_row = rows[shifted.argmax(axis=0)]
        interest.score = relevance + spread * shared - penalty
        interest.eligible = ~blocked
        if gate is not None:
            interest.eligible &= gate[rows].max(axis=0) >= min_score
        if rules and (rule := rules.get(name)):
            _apply_rules(interest, rule, spread, words, facts, word_index)
        if cf_z is not None:
            for strong in np.flatnonzero(cf_z >= 1.0):
                interest.extras[int(strong)].append("also saved by readers of your papers")
        if carried_z is not None:
            co_saved = cf_z if cf_z is not None else np.zeros(n)
            for strong in np.flatnonzero((carried_z >= 1.5) & (co_saved < 1.0)):
                interest.extras[int(strong)].append("like papers that readers of yours saved")
        interests.append(interest)

    chosen = _take_turns(interests, papers, k, knobs.diversity)
    out = []
    for col, interest in chosen:
        row = int(interest.best_row[col])
        reason = evidence[row].reason
        if matched is not None and (hits := matched[row]) and (terms_used := hits.of(col)):
            reason += f" ({', '.join(terms_used[:3])})"
        if extra := interest.extras.get(col):
            reason += "; " + "; ".join(extra)
        out.append(Ranked(paper_ids[col], float(interest.score[col]), reason, interest.name))
    return sorted(out, key=lambda r: -r.score)


def _apply_rules(
    interest: _Interest,
    rule: Rules,
    spread: float,
    words: Sequence[Words] | None,
    facts: Facts | None,
    index: WordIndex | None = None,
) -> None:
    categories = facts.categories if facts is not None else None
    authors = facts.authors if facts is not None else None
    followed = {a.casefold() for a in rule.authors}
    if words is not None:
        excluded = [_mentioning(words, kw, index) for kw in rule.exclude_keywords]
        included = [(kw, _mentioning(words, kw, index)) for kw in rule.include_keywords]
    for col in range(len(interest.score)):
        if words is not None:
            if any(mentions[col] for mentions in excluded):
                interest.eligible[col] = False
            hits = [kw for kw, mentions in included if mentions[col]]
            if hits:
                interest.score[col] += KEYWORD_BOOST * spread
                interest.extras[col].append("mentions " + ", ".join(f'"{h}"' for h in hits[:3]))
        if categories is not None:
            cats = set(categories[col] or ())
            if cats & set(rule.exclude_categories):
                interest.eligible[col] = False
            if rule.include_categories and not cats & set(rule.include_categories):
                interest.eligible[col] = False
        if authors is not None and followed:
            by = [a for a in authors[col] or () if a.casefold() in followed]
            if by:
                interest.score[col] += AUTHOR_BOOST * spread
                interest.extras[col].append(f"by {', '.join(by[:2])}, whom you follow")


@dataclass
class _Queue:
    interest: _Interest
    order: np.ndarray  # candidate columns, best first
    closest: np.ndarray  # per column of ``order``: highest cosine to a paper this queue picked


def _take_turns(
    interests: list[_Interest], papers: np.ndarray, k: int, diversity: float
) -> list[tuple[int, _Interest]]:
    """Interests take turns picking their best remaining paper (MMR when ``diversity`` > 0).

    Turns keep an interest with higher raw scores (a crowded topic) from filling the whole list.
    """
    queues = []
    for interest in interests:
        candidates = np.flatnonzero(interest.eligible)
        order = candidates[np.argsort(-interest.score[candidates], kind="stable")]
        if diversity > 0:
            order = order[: max(k * _MMR_POOL, 100)]
        queues.append(_Queue(interest, order, np.full(len(order), -np.inf)))
    chosen: dict[int, _Interest] = {}
    while len(chosen) < k and queues:
        for queue in list(queues):
            col = _next(queue, chosen, diversity)
            if col is None:
                queues.remove(queue)
                continue
            chosen[col] = queue.interest
            if diversity > 0 and len(queue.order):
                queue.closest = np.maximum(queue.closest, papers[queue.order] @ papers[col])
            if len(chosen) == k:
                break
    return list(chosen.items())


def _next(queue: _Queue, chosen: dict[int, _Interest], diversity: float) -> int | None:
    order, closest = queue.order, queue.closest
    if diversity <= 0 or not np.isfinite(closest).any():
        return next((int(c) for c in order if c not in chosen), None)
    taken = np.fromiter((c in chosen for c in order), bool, len(order))
    if taken.all():
        return None
    value = queue.interest.score[order] - diversity * np.where(np.isfinite(closest), closest, 0.0)
    value[taken] = -np.inf
    return int(order[int(np.argmax(value))])
