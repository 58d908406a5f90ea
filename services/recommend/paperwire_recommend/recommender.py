"""Recommendations and digests for one user: gathers the profile and candidates, then ranks (pure).

The profile is the user's interests (text, seed papers, rules), their feedback (likes, saves and
opens become evidence; dislikes push similar papers down) and their knobs. Ranking models shared by
all users, the whitened space and co-saves, are built from the vector store and the SQL store,
kept in memory and rebuilt in the background when stale, so no request waits for them after the
first.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from paperwire_recommend.catalogue import FIELDS, Candidates, Catalogue
from paperwire_recommend.collaborative import NEIGHBOURS, CoSaves, Nearest
from paperwire_recommend.config import Settings
from paperwire_recommend.encoder import TextEncoder
from paperwire_recommend.ranking import Evidence, Knobs, Ranked, Rules, Space, rank
from paperwire_recommend.store import POSITIVE_FEEDBACK, Interest, Store, User
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.vectors import StoredPaper, VectorStore

log = logging.getLogger(__name__)

# Papers considered for one digest: a busy arXiv day in cs is ~2,000 new papers.
MAX_DIGEST_CANDIDATES = 50_000
# The digests' candidates read at the start of a scheduler tick serve its later digests (topped up
# with papers embedded since) for at most this long (seconds).
RECENT_MAX_AGE = 600.0
# The API ranks a bounded set: per interest, the papers nearest its evidence, plus the papers
# co-saved with the user's library. 200 per interest keeps a 10-paper answer's re-ranking
# meaningful while the request stays within one vector search per interest.
API_CANDIDATES_PER_INTEREST = 200
API_COSAVED_CANDIDATES = 200
# That bounded set is all close to the user's evidence: standardised over it alone (ranking.rank
# measures every signal in standard deviations over the candidates), relevance spreads little and
# co-saves outweigh it. So this many stored papers, drawn at random when the whitened space is
# fitted, join every API ranking to set the scales as the whole corpus would, and are never shown
# unless a search found them. Measured on CiteULike-a (warm protocol, 300 users, development seeds
# 1 and 2, the API's candidates emulated): nDCG@10 0.183 and 0.180 without them, 0.190 and 0.188
# with 300, 0.195 and 0.191 with 1,000 (seed 1 ranking every paper: 0.204); Recall@50 0.403 and
# 0.406 without, 0.410 and 0.411 with 300. 1,000 cost a 200-paper library's request ~20 ms (it
# takes ~32 ms without), mostly per-paper work in ranking (words, payloads); 300 cost ~5 ms.
# Since the eleventh session co-save scores are not standardised over them but over the whole
# corpus, exactly (``CoSaves.corpus_scale``; most of a corpus is co-saved with nobody's library,
# as in a ranking of every paper): `paperwire eval --api` on the development splits (warm, 300
# users, seeds 1 / 2): nDCG@10 0.185 / 0.185 -> 0.209 / 0.216 (every paper ranked: 0.205 /
# 0.205), Recall@50 0.409 / 0.413 -> 0.420 / 0.430 (0.432 / 0.431); over these 300 papers alone,
# a noisy sample of a heavy-tailed score, 0.204 / 0.197 and 0.408 / 0.415. Cold is unchanged
# (brand-new papers have no co-saves). Since the fourteenth session relevance's spread, which every
# other signal is measured in, is taken over these papers alone (``rank(scale_rows=...)``): over
# the whole bounded set, mostly close to the user, it came out about twice as wide as over the
# corpus (warm, seed 1, 60 users: 0.046 on average, against 0.025 over these papers and 0.024 over
# every paper), so co-saves weighed about twice what they weigh in a ranking of every paper. Warm,
# seeds 1 / 2 / 3: Recall@50 0.410 / 0.431 / 0.434 -> 0.433 / 0.442 / 0.434 (every paper ranked:
# 0.437 / 0.442 / 0.436), nDCG@10 0.207 / 0.221 / 0.232 -> 0.209 / 0.219 / 0.234; cold, seeds
# 1 / 2: Recall@50 0.575 / 0.594 -> 0.570 / 0.591, nDCG@10 0.302 / 0.284 -> 0.305 / 0.284.
API_REFERENCE_PAPERS = 300
# The most recent feedback papers used as evidence (a library of thousands stays fast).
MAX_FEEDBACK_EVIDENCE = 500
# Dislikes whose reason says the topic is fine: the paper is never shown again, nothing more.
TOPIC_NEUTRAL_REASONS = frozenset({"low quality"})
# Saved papers' vectors fetched per request to the vector store when co-saves are rebuilt.
_VECTOR_BATCH = 1_000
_FEEDBACK_KINDS = {"like": "liked", "save": "saved", "click": "clicked"}


@dataclass(frozen=True)
class Recommendation:
    ranked: Ranked
    payload: dict[str, Any]


@dataclass
class Profile:
    """What ranking needs about one user, gathered from the stores."""

    evidence: list[Evidence]
    dislikes: np.ndarray | None
    rules: dict[str, Rules]
    knobs: Knobs
    library: list[str]  # seed, liked and saved paper ids: what co-saves walk from
    exclude: frozenset[str]  # sent, disliked, or already reacted to: never recommended


class _ProfileRows(NamedTuple):
    """What the SQL store holds of a profile besides the user row."""

    feedback: list[dict[str, Any]]
    sent: frozenset[str]  # sent or disliked
    knobs: dict[str, float] | None

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever any of it changes (feedback is only ever added)."""
        last = self.feedback[-1]["feedback_id"] if self.feedback else None
        knobs = tuple(sorted(self.knobs.items())) if self.knobs else None
        return (len(self.feedback), last, len(self.sent), hash(self.sent), knobs)


T = TypeVar("T")


@dataclass
class _Cached(Generic[T]):
    """A model rebuilt in a worker thread when older than ``max_age``; the old one serves meanwhile."""

    build: Callable[[], T]
    max_age: float
    value: T | None = None
    built_at: float = -float("inf")
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def get(self) -> T:
        stale = time.monotonic() - self.built_at > self.max_age
        if (self.value is None or stale) and self._task is None:
            self._task = asyncio.create_task(self._refresh())
        if self.value is None and self._task is not None:
            # Every request arriving before the first build waits for that one build: a fresh
            # recommend hit by 32 requests at once used to start 32 builds (189 s, 3.2 GiB).
            await asyncio.shield(self._task)
        assert self.value is not None
        return self.value

    async def _refresh(self) -> None:
        try:
            started = time.monotonic()
            self.value = await asyncio.to_thread(self.build)
            self.built_at = started
        except Exception:
            if self.value is None:
                raise
            log.exception("rebuilding a ranking model failed; keeping the previous one")
        finally:
            self._task = None


class _Answer(NamedTuple):
    """An answer as kept: its recommendations pickled, so that it is a tuple of plain values.

    Kept as objects (each recommendation, its payload, the payload's lists), 2,000 users' answers
    were ~100k objects that every full pass of Python's garbage collector walked: ~40-100 ms,
    every few seconds under load, in the middle of whichever request was running
    (bench/README.md). The collector stops tracking a tuple of plain values once it has seen it.
    """

    key: tuple[Any, ...]
    computed_at: float  # wall clock, comparable with the papers' embedded_at
    pickled: bytes

    @classmethod
    def of(cls, key: tuple[Any, ...], computed_at: float, found: list[Recommendation]) -> _Answer:
        return cls(key, computed_at, pickle.dumps(found, pickle.HIGHEST_PROTOCOL))

    @property
    def found(self) -> list[Recommendation]:
        # Only ever what ``of`` pickled in this process: never bytes from outside.
        return pickle.loads(self.pickled)  # noqa: S301


class Answers:
    """Each user's last recommendations, given again while nothing they rest on has changed.

    An answer rests on the request (k, since), the user's profile (interests, feedback, sent papers,
    knobs), the shared ranking models and the papers in the vector store. The caller puts the first
    three in the key; a paper embedded after the answer was computed (less ``CLOCK_SLACK``, for the
    clocks of other hosts) makes it stale, and so does age (``max_age``: recency and popularity
    move on their own). At most ``size`` users are kept, least recently asked first out.

    A hit costs the profile's SQL and one filtered look-up in the vector store instead of a vector
    search, fetching candidates and ranking them (bench/README.md, recommendation latency).
    """

    CLOCK_SLACK = 60.0

    def __init__(self, size: int, max_age: float) -> None:
        self.size = size
        self.max_age = max_age
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    def get(self, user_id: str, key: tuple[Any, ...], now: float) -> _Answer | None:
        answer = self._answers.get(user_id)
        if answer is None or answer.key != key or now - answer.computed_at > self.max_age:
            return None
        self._answers.move_to_end(user_id)
        return answer

    def put(self, user_id: str, answer: _Answer) -> None:
        if self.size <= 0:
            return
        self._answers[user_id] = answer
        self._answers.move_to_end(user_id)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


@dataclass(frozen=True)
class _Recent:
    """The papers embedded since ``since``, as read from the vector store at ``read_at``, and as
    ranking takes them (``Candidates.of`` 2,000 papers took ~12 ms of every digest), with each
    candidate's ``embedded_at``; their vectors kept whitened in the current space (``space``),
    and an index of their words (every digest matches its user's words against them).
    """

    since: float
    read_at: float  # wall clock
    papers: dict[str, StoredPaper]
    candidates: Candidates
    embedded: np.ndarray

    @classmethod
    def of(
        cls, since: float, read_at: float, papers: dict[str, StoredPaper], space: Space | None
    ) -> _Recent:
        candidates = Candidates.of(list(papers.values())).in_space(space).indexed()
        embedded = np.asarray([_embedded_at(papers[p]) for p in candidates.ids], np.float64)
        return cls(since, read_at, papers, candidates, embedded)


class Recommender:
    def __init__(
        self, settings: Settings, store: Store, vectors: VectorStore, encoder: TextEncoder
    ) -> None:
        self.settings = settings
        self.store = store
        self.vectors = vectors
        self.encoder = encoder
        self._space = _Cached(self._fit_space, settings.space_refresh_seconds)
        self._cosaves = _Cached(self._build_cosaves, settings.collaborative_refresh_seconds)
        self.answers = Answers(settings.answer_cache_size, settings.answer_max_age_seconds)
        # Every stored paper's vector, words and facts, and each one's nearest saved papers
        # (carried co-saves, kept across co-save rebuilds): both filled in the background for
        # papers embedded since the last pass (``_index_papers``).
        self.catalogue = Catalogue()
        self.nearest = Nearest()
        self._nearest_task: asyncio.Task[None] | None = None
        self._nearest_pass = -float("inf")  # monotonic start of the last pass
        # Wall clock: papers embedded since are next, for the catalogue and for ``nearest``.
        self._indexed_since: float | None = None
        self._nearest_since: float | None = None
        self._nearest_starts = 0  # Nearest.fresh_starts when that pass started
        self.nearest_pass_done = 0.0  # wall clock at the end of the last pass (0: none yet)
        self._closing = False
        self._recent: _Recent | None = None  # digests' candidates, shared within a scheduler tick

    def _fit_space(self) -> tuple[Space | None, Candidates]:
        """The whitened space of a sample of the stored papers, and ``API_REFERENCE_PAPERS`` of
        them drawn at random (seeded: the same papers give the same draw), kept whitened in it. A
        tuple, so "no space yet" (too few papers) is still a cached value."""
        sample = self.vectors.embedded_since(0.0, self.settings.space_sample)
        found = [(p, p.vector) for p in sample if p.vector is not None]
        space = Space.fit(np.stack([v for _, v in found])) if found else None
        log.info("whitened space %s from %d papers", "fitted" if space else "skipped", len(found))
        drawn = np.random.default_rng(0).permutation(len(found))[:API_REFERENCE_PAPERS]
        return space, Candidates.of([found[i][0] for i in sorted(drawn)]).in_space(space)

    def _build_cosaves(self) -> CoSaves:
        cosaves = CoSaves(self.store.library_pairs())
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(cosaves.ids), _VECTOR_BATCH):
            batch = cosaves.ids[start : start + _VECTOR_BATCH]
            for paper in self.vectors.get(batch, with_vectors=True):
                if paper.vector is not None:
                    found[paper.paper_id] = paper.vector
        self.nearest.sync(found)
        cosaves.attach(self.nearest)
        log.info("co-saves rebuilt: %d saved papers", len(cosaves))
        return cosaves

    def _index_papers(self) -> None:
        """Catalogue every paper embedded or updated since the last pass (a new version, its
        popularity) and find its nearest saved papers (the first pass, or after ``Nearest``
        started afresh: every paper), so that neither a request nor a digest pays for either.
        Nearest saved papers: ~0.15 ms a paper at 25k saved papers (15 s at 100k papers, in the
        background), where a first request paid ~15 ms; requests would find the same papers'
        neighbours one by one, so memory ends up the same (~0.6 KB a paper). The catalogue: see
        ``catalogue``."""
        started = time.time()
        nearest = len(self.nearest) > NEIGHBOURS  # too few saved papers: nothing is carried yet
        since = self._indexed_since or 0.0
        if nearest:
            fresh = self.nearest.fresh_starts != self._nearest_starts
            since = 0.0 if self._nearest_since is None or fresh else min(since, self._nearest_since)
        starts = self.nearest.fresh_starts
        found = 0
        for page in self.vectors.papers_since(since - Answers.CLOCK_SLACK, FIELDS):
            if self._closing:
                return
            page = [p for p in page if p.vector is not None]
            if page:
                self.catalogue.add(page)
                if nearest:
                    vectors = np.stack([p.vector for p in page])  # type: ignore[misc]
                    self.nearest.find([p.paper_id for p in page], vectors)
                found += len(page)
        self._indexed_since = started
        if nearest:
            self._nearest_since, self._nearest_starts = started, starts
            self.nearest_pass_done = time.time()
        log.info(
            "%d papers catalogued%s in %.1f s",
            found,
            ", their nearest saved papers found" if nearest else "",
            time.time() - started,
        )

    def _index_soon(self) -> None:
        """Start an ``_index_papers`` pass in a worker thread when none runs and the last one
        started a co-save refresh interval ago."""
        due = time.monotonic() - self._nearest_pass >= self.settings.collaborative_refresh_seconds
        if self._closing or not due or self._nearest_task is not None:
            return
        self._nearest_pass = time.monotonic()

        async def run() -> None:
            try:
                await asyncio.to_thread(self._index_papers)
            except Exception:
                log.exception(
                    "cataloguing papers or finding their nearest saved papers failed; "
                    "requests read and find their own"
                )
            finally:
                self._nearest_task = None

        self._nearest_task = asyncio.create_task(run())

    def _read_recent(self, since: float, space: Space | None) -> _Recent:
        """Papers embedded since ``since`` (unix seconds, with vectors), and more: a digest's
        candidates are those of them embedded since its own ``since``.

        Read from the vector store once for all the digests of a scheduler tick, then topped up
        with what was embedded since the last read: reading a day's 2,000 papers took ~180 ms,
        more than half of a digest's time (bench/README.md). ``forget_recent`` lets them go.
        """
        recent = self._recent
        now = time.time()
        if recent is None or recent.since > since or now - recent.read_at > RECENT_MAX_AGE:
            read = self.vectors.embedded_since(since, MAX_DIGEST_CANDIDATES)
            found = _Recent.of(since, now, {p.paper_id: p for p in read}, space)
            # A capped read is not all of them: another user's digest could not filter it.
            self._recent = found if len(read) < MAX_DIGEST_CANDIDATES else None
            return found
        newer = self.vectors.embedded_since(
            recent.read_at - Answers.CLOCK_SLACK, MAX_DIGEST_CANDIDATES
        )
        changed = [
            p
            for p in newer  # new, or embedded again
            if p.paper_id not in recent.papers
            or _embedded_at(recent.papers[p.paper_id]) != _embedded_at(p)
        ]
        if changed:
            papers = dict(recent.papers)
            papers.update((p.paper_id, p) for p in changed)
            self._recent = _Recent.of(recent.since, now, papers, space)
        else:
            # In the space of this digest: a tick that outlived a space fit whitens once more.
            candidates = recent.candidates.in_space(space)
            self._recent = replace(recent, read_at=now, candidates=candidates)
        return self._recent

    def recent_candidates(
        self, since: float, space: Space | None = None
    ) -> tuple[Candidates, dict[str, StoredPaper]]:
        """A digest's candidates: the papers embedded since ``since`` (unix seconds), as ranking
        takes them (kept whitened in ``space``), and the papers read (by id), for their payloads."""
        recent = self._read_recent(since, space)
        keep = np.flatnonzero(recent.embedded >= since)[:MAX_DIGEST_CANDIDATES]
        if len(keep) == len(recent.candidates):
            # All of them (a user whose last digest is as old as the oldest this tick read for):
            # selecting them would copy 2,000 papers' vectors and words for nothing.
            return recent.candidates, recent.papers
        return recent.candidates.select(keep), recent.papers

    def forget_recent(self) -> None:
        """Let the digests' candidates go (the scheduler calls it at the end of each tick)."""
        self._recent = None

    async def close(self) -> None:
        """Stop background work (before the stores close)."""
        self._closing = True
        if self._nearest_task is not None:
            await asyncio.shield(self._nearest_task)

    async def space(self) -> Space | None:
        return (await self._space.get())[0]

    async def reference(self) -> Candidates:
        """Stored papers drawn at random, which set the scales of an API ranking (see
        ``API_REFERENCE_PAPERS``)."""
        return (await self._space.get())[1]

    async def cosaves(self) -> CoSaves:
        cosaves = await self._cosaves.get()
        self._index_soon()
        return cosaves

    async def _interest_vectors(self, user: User) -> None:
        """Encode interest texts once, then keep the vectors in the user row."""
        missing = [i for i in user.interests if i.text and i.vector is None]
        if missing:
            encoded = await self.encoder.encode([i.text or "" for i in missing])
            for interest, row in zip(missing, encoded, strict=True):
                interest.vector = [float(x) for x in row]
            await asyncio.to_thread(self.store.update_user, user, user.updated_at)

    async def _profile_rows(self, user: User) -> _ProfileRows:
        def read() -> _ProfileRows:  # one thread: three quick queries (~1 ms in all)
            store = self.store
            return _ProfileRows(
                store.feedback_of(user.id), store.excluded_papers(user.id), store.get_knobs(user.id)
            )

        return await asyncio.to_thread(read)

    async def profile(self, user: User, rows: _ProfileRows | None = None) -> Profile:
        await self._interest_vectors(user)
        rows = rows or await self._profile_rows(user)
        return await asyncio.to_thread(self._profile, user, rows)

    def _profile(self, user: User, rows: _ProfileRows) -> Profile:
        """The profile of ``user``, whose interests' vectors are known (``_interest_vectors``),
        from their rows: a thread's work (it reads the papers of their evidence)."""
        feedback, sent, knobs = rows
        latest: dict[str, dict[str, Any]] = {}
        for row in feedback:  # oldest first: the latest reaction to a paper wins
            latest.pop(row["paper_id"], None)
            latest[row["paper_id"]] = row
        reacted = [r for r in latest.values() if r["kind"] in _FEEDBACK_KINDS]
        reacted = reacted[-MAX_FEEDBACK_EVIDENCE:]
        disliked = [
            r["paper_id"]
            for r in latest.values()
            if r["kind"] == "dislike" and r["reason"] not in TOPIC_NEUTRAL_REASONS
        ]
        seed_ids = [s for i in user.interests for s in i.seed_paper_ids]
        wanted = list(dict.fromkeys([*seed_ids, *(r["paper_id"] for r in reacted), *disliked]))
        stored = {p.paper_id: p for p in self._papers(wanted) if p.vector is not None}
        evidence = _interest_evidence(user.interests, stored)
        evidence += _feedback_evidence(user.interests, evidence, reacted, stored)
        dislikes = [stored[p].vector for p in disliked if p in stored]
        library = [*seed_ids, *(r["paper_id"] for r in reacted if r["kind"] in POSITIVE_FEEDBACK)]
        return Profile(
            evidence=evidence,
            dislikes=np.stack(dislikes) if dislikes else None,  # type: ignore[arg-type]
            rules={i.name: _rules(i) for i in user.interests},
            knobs=Knobs(**knobs) if knobs else Knobs(),
            library=list(dict.fromkeys(library)),
            # Seeds and papers the user reacted to are theirs already: never recommend them back.
            exclude=sent | set(seed_ids) | set(latest),
        )

    def _papers(self, paper_ids: Sequence[str]) -> list[StoredPaper]:
        """The stored papers among ``paper_ids``, in that order, with vectors and titles (payload
        ``title``): from the catalogue, and from the vector store for papers it does not hold
        yet (embedded since its last pass)."""
        found = self.catalogue.papers(paper_ids)
        if missing := [p for p in paper_ids if p not in found]:
            found.update((p.paper_id, p) for p in self.vectors.get(missing, with_vectors=True))
        return [p for pid in dict.fromkeys(paper_ids) if (p := found.get(pid)) is not None]

    def _candidates(self, paper_ids: Sequence[str]) -> Candidates:
        """The stored papers among ``paper_ids``, in that order, as ranking takes them: from the
        catalogue, and from the vector store for papers it does not hold yet."""
        held = self.catalogue.candidates(paper_ids)
        known = set(held.ids)
        missing = [p for p in paper_ids if p not in known]
        if not missing:
            return held
        found = held + Candidates.of(self.vectors.get(missing, with_vectors=True))
        column = {p: i for i, p in enumerate(found.ids)}
        return found.select([column[p] for p in dict.fromkeys(paper_ids) if p in column])

    async def evidence(self, user: User) -> list[Evidence]:
        return (await self.profile(user)).evidence

    def _rank(
        self,
        profile: Profile,
        candidates: Candidates,
        k: int,
        space: Space | None,
        cosaves: CoSaves,
        min_score: float = -1.0,
        reference: Candidates | None = None,
    ) -> list[Ranked]:
        """The one ranking call behind both the API and the digests. ``reference``: papers drawn
        at random that set the scales (``API_REFERENCE_PAPERS``, kept whitened), for a bounded set
        of candidates: those not among them join them and are never recommended, relevance's
        spread is measured over them alone (``scale_rows``), and co-save scores are standardised
        as over the whole corpus (``CoSaves.corpus_scale``)."""
        candidates = candidates.in_space(space)
        exclude = profile.exclude
        collaborative_scale = None
        scale_rows = None
        if reference is not None and len(reference):
            held = set(candidates.ids)
            scale_only = reference.select([i for i, p in enumerate(reference.ids) if p not in held])
            candidates = candidates + scale_only
            exclude = exclude | set(scale_only.ids)
            if len(cosaves):
                corpus = len(self.catalogue) or self.vectors.count()
                collaborative_scale = cosaves.corpus_scale(profile.library, corpus)
            drawn = set(reference.ids)
            scale_rows = np.fromiter((p in drawn for p in candidates.ids), bool, len(candidates))
        ids, vectors = candidates.ids, candidates.vectors
        evidence = np.stack([e.vector for e in profile.evidence])
        found = cosaves.carried(profile.library, ids, vectors, evidence, k)
        carried, crowding = found if found is not None else (None, None)
        return rank(
            profile.evidence,
            ids,
            vectors,
            k=k,
            words=candidates.words,
            word_index=candidates.index,
            min_score=min_score,
            exclude=exclude,
            space=space,
            whitened=candidates.whitened_in(space),
            collaborative=cosaves.scores(profile.library, ids) if len(cosaves) else None,
            collaborative_scale=collaborative_scale,
            carried=carried,
            crowding=crowding,
            dislikes=profile.dislikes,
            facts=candidates.facts,
            rules=profile.rules,
            knobs=profile.knobs,
            now=time.time(),
            scale_rows=scale_rows,
        )

    async def recommend(
        self, user: User, k: int, published_since: float | None = None
    ) -> list[Recommendation]:
        """The user's ``k`` best papers now (only papers published since ``published_since``).

        Given again from ``self.answers`` while still right (see Answers).
        """
        rows = await self._profile_rows(user)
        space, cosaves = await self.space(), await self.cosaves()
        key = (
            k,
            published_since,
            user.updated_at,
            rows.fingerprint(),
            self._space.built_at,
            cosaves.version,
        )
        started = time.time()
        answer = self.answers.get(user.id, key, started)
        if answer is not None:
            since = answer.computed_at - Answers.CLOCK_SLACK
            if not await asyncio.to_thread(self.vectors.embedded_since, since, 1):
                return answer.found
        found = await self._recommend(user, k, published_since, rows, space, cosaves)
        self.answers.put(user.id, _Answer.of(key, started, found))
        return found

    async def _recommend(
        self,
        user: User,
        k: int,
        published_since: float | None,
        rows: _ProfileRows,
        space: Space | None,
        cosaves: CoSaves,
    ) -> list[Recommendation]:
        await self._interest_vectors(user)
        reference = await self.reference()

        def recommended() -> list[Recommendation]:
            # One thread for the rest: each hand-over to a thread and back cost ~0.1-1 ms, more
            # when the other core is busy.
            profile = self._profile(user, rows)
            if not profile.evidence:
                return []
            papers = self._search(profile, k, published_since, cosaves)
            if not len(papers):
                return []
            ranked = self._rank(profile, papers, k, space, cosaves, reference=reference)
            # Only the papers returned are read whole from the store.
            payloads = {
                p.paper_id: p.payload for p in self.vectors.get([r.paper_id for r in ranked])
            }
            return [
                Recommendation(r, payloads[r.paper_id]) for r in ranked if r.paper_id in payloads
            ]

        return await asyncio.to_thread(recommended)

    def _search(
        self, profile: Profile, k: int, published_since: float | None, cosaves: CoSaves
    ) -> Candidates:
        """An API ranking's candidates: per interest, the papers nearest its evidence's mean
        (``API_CANDIDATES_PER_INTEREST``), and the papers most co-saved with the library."""

        def search(query: np.ndarray, limit: int) -> list[str]:
            # Ids only: the catalogue holds the rest (``_candidates``).
            hits = self.vectors.search(
                query,
                limit,
                exclude=profile.exclude,
                published_since=published_since,
                with_payload=False,
            )
            return [hit.paper_id for hit in hits]

        papers = self._candidates(api_candidates(profile, k, cosaves, search))
        if published_since is not None:  # searches kept only these already; co-saves not
            published = np.asarray(papers.facts.published)
            papers = papers.select(np.flatnonzero(published >= published_since))
        return papers

    async def build_digest(self, user: User, digest_key: str, now: datetime) -> DigestDue | str:
        """The digest for ``digest_key``, or the reason there is none (nothing new worth sending)."""
        profile = await self.profile(user)
        if not profile.evidence:
            return "no interests with text or known seed papers"
        since = await asyncio.to_thread(self.store.last_digest_at, user.id)
        if since is None:
            since = now - timedelta(days=self.settings.first_digest_lookback_days)
        space, cosaves = await self.space(), await self.cosaves()
        candidates, papers = await asyncio.to_thread(
            self.recent_candidates, since.timestamp(), space
        )
        if not len(candidates):
            return "no new papers"
        ranked = await asyncio.to_thread(
            self._rank,
            profile,
            candidates,
            user.max_papers,
            space,
            cosaves,
            self.settings.min_score,
        )
        if not ranked:
            return "no new papers close enough to your interests"
        return DigestDue(
            digest_key=digest_key,
            user_id=user.id,
            email=user.email,
            papers=tuple(ranked_paper(r, papers[r.paper_id].payload) for r in ranked),
            created_at=now,
        )


def _interest_evidence(interests: list[Interest], stored: dict[str, StoredPaper]) -> list[Evidence]:
    evidence = []
    for interest in interests:
        if interest.vector is not None:
            vector = np.asarray(interest.vector, np.float32)
            evidence.append(Evidence(interest.name, vector, text=interest.text))
        for seed_id in interest.seed_paper_ids:
            if (seed := stored.get(seed_id)) is not None and seed.vector is not None:
                title = seed.payload.get("title", seed_id)
                evidence.append(
                    Evidence(interest.name, seed.vector, seed_title=title, paper_id=seed_id)
                )
    return evidence


def _feedback_evidence(
    interests: list[Interest],
    base: list[Evidence],
    reacted: list[dict[str, Any]],
    stored: dict[str, StoredPaper],
) -> list[Evidence]:
    """Liked, saved and opened papers as evidence, each joining the interest it is closest to."""
    papers = [(r, stored[r["paper_id"]]) for r in reacted if r["paper_id"] in stored]
    if not papers:
        return []
    names = [i.name for i in interests]
    if base:
        own = np.stack([e.vector for e in base])
        sims = np.stack([p.vector for _, p in papers if p.vector is not None]) @ own.T
        owner = [base[int(j)].interest for j in sims.argmax(axis=1)]
    else:
        owner = [names[0] if names else ""] * len(papers)
    return [
        Evidence(
            interest,
            paper.vector,  # type: ignore[arg-type]
            seed_title=paper.payload.get("title", row["paper_id"]),
            kind=_FEEDBACK_KINDS[row["kind"]],
            paper_id=row["paper_id"],
        )
        for (row, paper), interest in zip(papers, owner, strict=True)
    ]


def api_candidates(
    profile: Profile,
    k: int,
    cosaves: CoSaves,
    search: Callable[[np.ndarray, int], Sequence[str]],
) -> list[str]:
    """The ids of the papers an API request ranks (besides the reference papers): per interest,
    what ``search(query, limit)`` finds nearest its evidence's mean (papers in
    ``profile.exclude`` left out), then the papers most co-saved with the library. Shared with
    ``paperwire eval --api``, which searches its candidates exactly instead of the vector store."""
    found: dict[str, None] = {}
    limit = max(k * 10, API_CANDIDATES_PER_INTEREST)
    for query in _queries(profile.evidence):
        found.update(dict.fromkeys(search(query, limit)))
    if len(cosaves):
        neighbours = cosaves.neighbours(profile.library, API_COSAVED_CANDIDATES)
        found.update(dict.fromkeys(p for p in neighbours if p not in profile.exclude))
    return list(found)


def _queries(evidence: Sequence[Evidence]) -> list[np.ndarray]:
    """One vector search per interest: the normalised mean of its evidence."""
    queries = []
    for name in dict.fromkeys(e.interest for e in evidence):
        mean = np.mean([e.vector for e in evidence if e.interest == name], axis=0)
        queries.append(mean / (np.linalg.norm(mean) or 1.0))
    return queries


def _rules(interest: Interest) -> Rules:
    return Rules(
        include_keywords=tuple(interest.include_keywords),
        exclude_keywords=tuple(interest.exclude_keywords),
        include_categories=tuple(interest.include_categories),
        exclude_categories=tuple(interest.exclude_categories),
        authors=tuple(interest.authors),
    )


def _embedded_at(paper: StoredPaper) -> float:
    value = paper.payload.get("embedded_at")
    return float(value) if isinstance(value, int | float) else 0.0


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
