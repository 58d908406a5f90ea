"""What ranking needs of every stored paper, held in memory: its vector, words, facts and title.

A request ranks ~700 papers. Read from the vector store with their payloads and vectors, then
split into words, they cost a 200-paper library's first request ~35 of its ~85 ms (in-process,
100k papers; 39-45 ms with the catalogue: bench/README.md). recommend reads every paper once
instead, in the background (``Recommender._index_papers``, then every co-save refresh interval
for papers embedded or updated since), and a request gathers rows of arrays. A paper embedded
since the last pass is not here yet: the request reads it from the store as before
(``Candidates.of``); one updated since (a new version, its popularity) is here as it was.

~3 KB a paper (384-d float32 vector 1.5 KB, words ~1.1 KB, title, categories, authors): ~320 MB
for the latency benchmark's 100k papers (vectors 180 MB with spare rows, words 115 MB).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from paperwire_recommend.ranking import Facts, Space, WordIndex, Words, text_words, words_of
from paperwire_shared.vectors import StoredPaper

# The payload fields kept (besides ``paper_id``): the rest (abstract aside, read for its words
# and let go) is read for the papers a request returns only.
FIELDS = ("title", "abstract", "categories", "authors", "published_ts", "popularity")
# Rows allocated at a time beyond those filled: growing copies the arrays.
_GROWTH = 1.25
_MIN_ROWS = 1_024


def paper_text(payload: Mapping[str, Any]) -> str:
    """The text whose words are matched: title and abstract."""
    return f"{payload.get('title', '')}\n{payload.get('abstract', '')}"


def _number(payload: Mapping[str, Any], key: str) -> float:
    value = payload.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def facts_of(payloads: Sequence[Mapping[str, Any]]) -> Facts:
    return Facts(
        categories=[tuple(p.get("categories") or ()) for p in payloads],
        authors=[tuple(p.get("authors") or ()) for p in payloads],
        published=np.asarray([_number(p, "published_ts") for p in payloads]),
        popularity=np.asarray([_number(p, "popularity") for p in payloads]),
    )


@dataclass(frozen=True)
class Candidates:
    """Papers to rank, in columns: ids, unit vectors (rows), words and facts, and where kept
    (``in_space``, ``indexed``), the vectors whitened in ``space`` and the words' index."""

    ids: list[str]
    vectors: np.ndarray
    words: list[Words]
    facts: Facts
    whitened: np.ndarray | None = None
    space: Space | None = None
    index: WordIndex | None = None

    def in_space(self, space: Space | None) -> Candidates:
        """These candidates with their vectors whitened in ``space`` kept (``whitened_in``), for
        candidates ranked more than once: the reference papers of every API ranking, the day's
        papers of every digest (~9 ms for 2,000 papers)."""
        if space is None or self.whitened_in(space) is not None:
            return self
        return replace(self, whitened=space.apply(self.vectors), space=space)

    def indexed(self) -> Candidates:
        """These candidates with an index of their words kept (``WordIndex``), for candidates
        matched against many users' words: the day's papers of every digest of a tick."""
        return self if self.index is not None else replace(self, index=WordIndex.of(self.words))

    def whitened_in(self, space: Space | None) -> np.ndarray | None:
        """``space.apply(self.vectors)`` if kept, else None."""
        return self.whitened if space is not None and space is self.space else None

    @classmethod
    def of(
        cls, papers: Sequence[StoredPaper], split: Callable[[str], Words] = words_of
    ) -> Candidates:
        """From stored papers with their vectors and payloads (``FIELDS`` at least); ``split``
        gives a text's words (cached by default)."""
        kept = [p for p in papers if p.vector is not None]
        dim = kept[0].vector.shape[-1] if kept else 0  # type: ignore[union-attr]
        return cls(
            [p.paper_id for p in kept],
            np.stack([p.vector for p in kept]) if kept else np.zeros((0, dim), np.float32),  # type: ignore[misc]
            [split(paper_text(p.payload)) for p in kept],
            facts_of([p.payload for p in kept]),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, columns: Sequence[int] | np.ndarray) -> Candidates:
        """These columns, in that order."""
        at = np.asarray(columns, np.intp)
        facts = self.facts
        return Candidates(
            [self.ids[c] for c in at],
            self.vectors[at],
            [self.words[c] for c in at],
            Facts(
                categories=[facts.categories[c] for c in at]
                if facts.categories is not None
                else None,
                authors=[facts.authors[c] for c in at] if facts.authors is not None else None,
                published=facts.published[at] if facts.published is not None else None,
                popularity=facts.popularity[at] if facts.popularity is not None else None,
            ),
            self.whitened[at] if self.whitened is not None else None,
            self.space,
            self.index.select(at) if self.index is not None else None,
        )

    def __add__(self, other: Candidates) -> Candidates:
        if not len(other):
            return self
        if not len(self):
            return other
        a, b = self.facts, other.facts
        # Whitened only if both halves are, in the same space.
        whitened = other.whitened_in(self.space) if self.whitened is not None else None
        return Candidates(
            self.ids + other.ids,
            np.concatenate([self.vectors, other.vectors]),
            self.words + other.words,
            Facts(
                categories=[*(a.categories or ()), *(b.categories or ())],
                authors=[*(a.authors or ()), *(b.authors or ())],
                published=np.concatenate([a.published, b.published]),
                popularity=np.concatenate([a.popularity, b.popularity]),
            ),
            np.concatenate([self.whitened, whitened]) if whitened is not None else None,
            self.space if whitened is not None else None,
        )


@dataclass(frozen=True)
class _Rows:
    """The catalogue at one time, replaced whole when it grows, so a reader never sees a row its
    arrays do not hold yet. A paper embedded again is rewritten in its row, in place."""

    rows: dict[str, int]  # paper -> row
    vectors: np.ndarray  # rows × dim; rows past len(rows) are spare
    published: np.ndarray
    popularity: np.ndarray
    # Object arrays, not lists: Python's garbage collector does not look inside numpy arrays.
    # As lists, each of its full passes visited every paper's words, title, categories and
    # authors (~400k items at 100k papers: ~15-40 ms, every few seconds under load, inside a
    # request); nothing here can be part of a reference cycle.
    words: np.ndarray  # of Words
    titles: np.ndarray  # of str
    categories: np.ndarray  # of tuple[str, ...]
    authors: np.ndarray  # of tuple[str, ...]


_COLUMNS = ("vectors", "published", "popularity", "words", "titles", "categories", "authors")


class Catalogue:
    """Every stored paper's vector, words, facts and title, by paper id. Thread-safe: one ``add``
    at a time (the background pass), reads from any thread meanwhile."""

    def __init__(self) -> None:
        self._at = self._empty()
        self._adding = threading.Lock()

    @staticmethod
    def _empty() -> _Rows:
        nothing = np.empty(0, object)
        return _Rows({}, np.zeros((0, 0), np.float32), np.zeros(0), np.zeros(0), *[nothing] * 4)

    def __len__(self) -> int:
        return len(self._at.rows)

    def __contains__(self, paper_id: str) -> bool:
        return paper_id in self._at.rows

    def add(self, papers: Iterable[StoredPaper]) -> None:
        """Add or rewrite papers (with vectors and ``FIELDS`` of their payloads)."""
        with self._adding:
            at = self._at
            papers = [p for p in papers if p.vector is not None]
            dim = papers[0].vector.shape[-1] if papers else 0  # type: ignore[union-attr]
            if papers and at.vectors.shape[1] not in (0, dim):
                at = self._empty()  # the store was rebuilt for a model of another size
            new = [
                p
                for p in dict((p.paper_id, p) for p in papers).values()
                if p.paper_id not in at.rows
            ]
            if papers and (not len(at.vectors) or len(at.rows) + len(new) > len(at.vectors)):
                at = self._grown(at, len(at.rows) + len(new), dim)
            rows = dict(at.rows) if new else at.rows
            for paper in new:  # each is written below
                rows[paper.paper_id] = len(rows)
            found = Candidates.of(papers, split=text_words)  # not cached: each is read once
            at_rows = np.fromiter((rows[p] for p in found.ids), np.intp, len(found))
            at.vectors[at_rows] = found.vectors
            at.published[at_rows] = found.facts.published
            at.popularity[at_rows] = found.facts.popularity
            for row, paper, words, categories, authors in zip(
                at_rows,
                papers,
                found.words,
                found.facts.categories or (),
                found.facts.authors or (),
                strict=True,
            ):
                at.words[row] = words
                at.titles[row] = str(paper.payload.get("title", paper.paper_id))
                at.categories[row] = tuple(categories)
                at.authors[row] = tuple(authors)
            # Published last: a reader holding the previous snapshot reads only its own rows.
            self._at = replace(at, rows=rows)

    @staticmethod
    def _grown(at: _Rows, needed: int, dim: int) -> _Rows:
        size = max(int(needed * _GROWTH), _MIN_ROWS)
        grown = _Rows(
            at.rows,
            np.zeros((size, dim), np.float32),
            np.full(size, np.nan),
            np.full(size, np.nan),
            *[np.empty(size, object) for _ in range(4)],
        )
        n = len(at.rows)
        if n:
            for name in _COLUMNS:
                getattr(grown, name)[:n] = getattr(at, name)[:n]
        return grown

    def candidates(self, paper_ids: Sequence[str]) -> Candidates:
        """Those of ``paper_ids`` held here, in that order (the rest are left out)."""
        at = self._at
        held = [p for p in paper_ids if p in at.rows]
        rows = np.fromiter((at.rows[p] for p in held), np.intp, len(held))
        return Candidates(
            held,
            at.vectors[rows] if len(at.vectors) else np.zeros((0, 0), np.float32),
            [at.words[r] for r in rows],
            Facts(
                categories=[at.categories[r] for r in rows],
                authors=[at.authors[r] for r in rows],
                published=at.published[rows],
                popularity=at.popularity[rows],
            ),
        )

    def papers(self, paper_ids: Iterable[str]) -> dict[str, StoredPaper]:
        """Those of ``paper_ids`` held here, with their vectors and titles (payload ``title``)."""
        at = self._at
        return {
            p: StoredPaper(p, {"paper_id": p, "title": at.titles[r]}, at.vectors[r])
            for p in paper_ids
            if (r := at.rows.get(p)) is not None
        }
