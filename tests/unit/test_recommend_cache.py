"""The ranking models recommend keeps in memory: built once however many requests wait, and from
the service's own stores."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
from faststream.redis import RedisBroker, TestRedisBroker
from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

from paperwire_recommend import recommender as recommender_module
from paperwire_recommend.catalogue import Candidates
from paperwire_recommend.config import Settings
from paperwire_recommend.recommender import Recommender, _Cached
from paperwire_recommend.store import Interest, Store
from paperwire_shared.events import FeedbackRecorded
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder, LocalTextEncoder
from tests.support.recommend import recommend_app, stored_papers


async def test_concurrent_first_requests_share_one_build():
    builds = []
    lock = threading.Lock()

    def build() -> int:
        with lock:
            builds.append(1)
        time.sleep(0.05)
        return len(builds)

    cache = _Cached(build, max_age=60)
    values = await asyncio.gather(*(cache.get() for _ in range(16)))
    assert values == [1] * 16
    assert len(builds) == 1


async def test_a_stale_model_keeps_serving_while_one_rebuild_runs():
    builds = []

    def build() -> int:
        builds.append(1)
        return len(builds)

    cache = _Cached(build, max_age=0)
    assert await cache.get() == 1
    stale = await asyncio.gather(*(cache.get() for _ in range(8)))
    assert set(stale) <= {1, 2}
    await asyncio.sleep(0.05)
    assert len(builds) == 2


def recommend_over(
    tmp_path: Any, vectors: QdrantEdgeStore, encoder: HashingEncoder
) -> tuple[Recommender, Store]:
    """recommend over ``vectors``, its SQL store under ``tmp_path``, texts encoded by ``encoder``."""
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    settings = Settings(redis_url="redis://unused", data_dir=tmp_path)
    return Recommender(settings, store, vectors, LocalTextEncoder(encoder)), store


def co_saving_service(
    tmp_path, embedded_at: float, vector_store: type[QdrantEdgeStore] = QdrantEdgeStore
) -> tuple[Recommender, QdrantEdgeStore]:
    """recommend over 26 papers on two topics, 24 of them saved; readers of "mine" saved the
    "lora-*" ones, and "new" (a LoRA paper) has no savers."""
    encoder = HashingEncoder()
    titles = {f"lora-{i}": f"low-rank adapters LoRA variant {i}" for i in range(12)}
    titles |= {f"nerf-{i}": f"neural radiance fields scene {i}" for i in range(12)}
    titles |= {"mine": "parameter-efficient fine-tuning", "new": "low-rank adapters LoRA new"}
    vectors = vector_store(tmp_path / "qdrant")
    vectors.upsert(stored_papers(titles, encoder, at=embedded_at))
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    now = datetime.now(UTC)
    for reader, topic in (("a", "lora"), ("b", "lora"), ("c", "nerf")):
        saved = [f"{topic}-{i}" for i in range(12)] + (["mine"] if topic == "lora" else [])
        for paper in saved:
            save = FeedbackRecorded(
                feedback_id=f"{reader}-{paper}",
                user_id=reader,
                paper_id=paper,
                kind="save",
                recorded_at=now,
            )
            store.record_feedback(save)
    settings = Settings(redis_url="redis://unused", data_dir=tmp_path)
    return Recommender(settings, store, vectors, LocalTextEncoder(encoder)), vectors


async def test_the_services_co_saves_carry_to_a_brand_new_paper(tmp_path):
    recommender, vectors = co_saving_service(tmp_path, embedded_at=1.0)
    cosaves = await recommender.cosaves()
    [new] = vectors.get(["new"], with_vectors=True)
    found = cosaves.carried(["mine"], ["new"], np.stack([new.vector]))
    assert found is not None  # the saved papers' vectors came from the vector store
    carried, _ = found
    assert carried[0] > 0
    await recommender.close()
    vectors.close()


async def test_new_papers_nearest_saved_papers_are_found_before_any_request_needs_them(tmp_path):
    recommender, vectors = co_saving_service(tmp_path, embedded_at=time.time())
    await recommender.cosaves()  # the first build starts a pass over recent papers
    for _ in range(200):
        if recommender.nearest.known("new"):
            break
        await asyncio.sleep(0.02)
    assert recommender.nearest.known("new")
    await recommender.close()
    vectors.close()


class GetRecording(QdrantEdgeStore):
    """The real Edge store, noting which papers each ``get`` asked vectors for."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.asked: list[tuple[list[str], bool]] = []

    def get(self, paper_ids: Any, *, with_vectors: bool = False) -> Any:
        self.asked.append((list(paper_ids), with_vectors))
        return super().get(paper_ids, with_vectors=with_vectors)


async def test_catalogued_papers_come_from_memory_and_only_newer_ones_from_the_store(tmp_path):
    recommender, vectors = co_saving_service(tmp_path, embedded_at=1.0, vector_store=GetRecording)
    assert isinstance(vectors, GetRecording)
    await recommender.cosaves()  # starts the background pass that catalogues every paper
    for _ in range(200):
        if recommender.nearest_pass_done:
            break
        await asyncio.sleep(0.02)
    assert len(recommender.catalogue) == 26
    encoder = HashingEncoder()
    later = {"later": "low-rank adapters LoRA, embedded after the pass"}
    vectors.upsert(stored_papers(later, encoder, at=time.time(), authors=["A. Writer"]))
    vectors.asked.clear()

    ids = ["new", "lora-1", "later", "missing", "nerf-2"]
    found = recommender._candidates(ids)
    papers = recommender._papers(ids)

    assert vectors.asked == [(["later", "missing"], True)] * 2
    stored = vectors.get(["new", "lora-1", "later", "nerf-2"], with_vectors=True)
    expected = Candidates.of(stored)
    assert found.ids == expected.ids == [p.paper_id for p in papers]
    np.testing.assert_array_equal(found.vectors, expected.vectors)
    assert [set(w.tolist()) for w in found.words] == [set(w.tolist()) for w in expected.words]
    assert found.facts.authors == expected.facts.authors == [(), (), ("A. Writer",), ()]
    np.testing.assert_array_equal(found.facts.published, expected.facts.published)
    for paper, want in zip(papers, stored, strict=True):
        np.testing.assert_array_equal(paper.vector, want.vector)
        assert paper.payload["title"] == want.payload["title"]
    await recommender.close()
    vectors.close()


async def test_a_paper_updated_since_the_last_pass_is_catalogued_again(tmp_path):
    recommender, vectors = co_saving_service(tmp_path, embedded_at=1.0)
    recommender._index_papers()
    assert recommender.catalogue.papers(["new"])["new"].payload["title"].endswith("new")
    # A new version: embed keeps embedded_at and moves updated_at (planning.payload_for).
    encoder = HashingEncoder()
    update = {"new": "sparse mixture of experts, a new version"}
    vectors.upsert(stored_papers(update, encoder, at=1.0, updated_at=time.time()))

    recommender._index_papers()

    [held] = recommender._candidates(["new"]).vectors
    np.testing.assert_array_equal(held, encoder.encode(list(update.values()))[0])
    assert recommender.catalogue.papers(["new"])["new"].payload["title"] == update["new"]
    await recommender.close()
    vectors.close()


class ReadCounting(QdrantEdgeStore):
    """The real Edge store, noting the ``since`` of every read of recently embedded papers."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.reads: list[float] = []

    def embedded_since(self, since: float, limit: int) -> Any:
        self.reads.append(since)
        return super().embedded_since(since, limit)


async def test_the_digests_of_a_tick_read_the_days_papers_once_then_only_newer_ones(tmp_path):
    encoder = HashingEncoder()
    vectors = ReadCounting(tmp_path / "qdrant")
    now = time.time()
    day = now - 86_400
    vectors.upsert(stored_papers({"a": "LoRA adapters", "b": "Gaussian splats"}, encoder, at=now))
    vectors.upsert(stored_papers({"old": "last week's paper"}, encoder, at=day - 3_600))
    recommender, store = recommend_over(tmp_path, vectors, encoder)

    assert set(recommender.recent_candidates(day)[0].ids) == {"a", "b"}
    vectors.upsert(stored_papers({"c": "a paper embedded between two digests"}, encoder, at=now))
    assert set(recommender.recent_candidates(day + 60)[0].ids) == {"a", "b", "c"}
    # The second digest read only what was embedded since the first read (less a clock slack).
    assert vectors.reads[0] == day and vectors.reads[1] > now - 120
    # A digest looking further back reads again; after the tick, everything is read again.
    assert "old" in recommender.recent_candidates(day - 7_200)[0].ids
    assert vectors.reads[2] == day - 7_200
    recommender.forget_recent()
    recommender.recent_candidates(day)
    assert vectors.reads[3] == day and len(vectors.reads) == 4
    vectors.close()


async def test_the_digests_of_a_tick_rank_candidates_built_once_until_a_paper_arrives(
    tmp_path, monkeypatch
):
    built: list[int] = []
    build = Candidates.of

    def counted(cls: Any, papers: Any) -> Candidates:
        built.append(len(papers))
        return build(papers)

    monkeypatch.setattr(Candidates, "of", classmethod(counted))
    encoder = HashingEncoder()
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    now = time.time()
    day = now - 86_400
    vectors.upsert(stored_papers({"a": "LoRA adapters", "b": "Gaussian splats"}, encoder, at=now))
    recommender, store = recommend_over(tmp_path, vectors, encoder)

    first, papers = recommender.recent_candidates(day)
    again, _ = recommender.recent_candidates(day + 60)
    later, _ = recommender.recent_candidates(now + 3_600)  # a user whose last digest was later
    assert built == [2] and first.ids == again.ids == ["a", "b"] and later.ids == []
    assert set(papers) == {"a", "b"}
    vectors.upsert(stored_papers({"c": "a paper embedded between two digests"}, encoder, at=now))
    found, papers = recommender.recent_candidates(day)
    assert built == [2, 3] and found.ids == ["a", "b", "c"] and "c" in papers
    vectors.close()


async def test_the_digests_of_a_tick_whiten_the_days_papers_once_until_a_paper_arrives(
    tmp_path, monkeypatch
):
    encoder = HashingEncoder(dim=16)  # 40 papers fit a 16-d space (Space.MIN_PAPERS_PER_DIM)
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    now = time.time()
    day = now - 86_400
    titles = {f"p{i}": f"paper {i} on topic {i % 5}" for i in range(40)}
    vectors.upsert(stored_papers(titles, encoder, at=now))
    recommender, store = recommend_over(tmp_path, vectors, encoder)
    space = await recommender.space()
    assert space is not None
    whitened: list[int] = []
    apply = type(space).apply

    def counted(self: Any, rows: Any) -> Any:
        whitened.append(len(rows))
        return apply(self, rows)

    monkeypatch.setattr(type(space), "apply", counted)

    first, _ = recommender.recent_candidates(day, space)
    again, _ = recommender.recent_candidates(day + 60, space)

    assert whitened == [40]
    # Their words are indexed once too, for every digest to look its user's words up in.
    assert first.index is not None and again.index is not None
    assert first.index.hashes is again.index.hashes
    for found in (first, again):
        np.testing.assert_allclose(
            found.whitened_in(space),  # type: ignore[arg-type]
            apply(space, found.vectors),
            atol=1e-6,
        )
    vectors.upsert(stored_papers({"new": "a paper embedded between two digests"}, encoder, at=now))
    assert "new" in recommender.recent_candidates(day, space)[0].ids
    assert whitened == [40, 41]
    vectors.close()


class SearchRecording(QdrantEdgeStore):
    """The real Edge store, noting every paper a search found."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.searched: set[str] = set()

    def search(self, *args: Any, **kwargs: Any) -> Any:
        hits = super().search(*args, **kwargs)
        self.searched |= {h.paper_id for h in hits}
        return hits


async def test_the_api_ranks_its_candidates_among_a_sample_of_all_papers_and_shows_only_them(
    tmp_path, monkeypatch
):
    """The API ranks what its vector search found, with stored papers drawn at random alongside
    to set the scales (recommender.API_REFERENCE_PAPERS); those are never shown, even when they
    would rank higher."""
    encoder = HashingEncoder()
    titles = {f"nerf-{i}": f"neural radiance fields scene {i}" for i in range(30)}
    titles |= {f"lora-{i}": f"low-rank adapters LoRA variant {i}" for i in range(30)}
    titles |= {f"both-{i}": f"neural radiance fields with low-rank adapters {i}" for i in range(20)}
    vectors = SearchRecording(tmp_path / "qdrant")
    vectors.upsert(stored_papers(titles, encoder, at=1.0))
    recommender, store = recommend_over(tmp_path, vectors, encoder)
    interest = Interest("mixed", text="neural radiance fields scene", seed_paper_ids=["lora-0"])
    user = store.create_user("a@example.org", "daily", 5, [interest], datetime.now(UTC))
    # One search per interest (its evidence's mean) finds k × 10 papers, mostly "both-*" ones.
    monkeypatch.setattr(recommender_module, "API_CANDIDATES_PER_INTEREST", 1)
    ranked_sets = []
    real_rank = recommender_module.rank

    def spy(evidence: Any, paper_ids: Any, *args: Any, **kwargs: Any) -> Any:
        ranked_sets.append((set(paper_ids), set(kwargs["exclude"])))
        return real_rank(evidence, paper_ids, *args, **kwargs)

    monkeypatch.setattr(recommender_module, "rank", spy)

    found = {r.ranked.paper_id for r in await recommender.recommend(user, 2)}

    assert len(vectors.searched) == 20 and found <= vectors.searched
    [(ranked, excluded)] = ranked_sets
    assert ranked == set(titles)  # all 80 stored papers: fewer than API_REFERENCE_PAPERS
    assert excluded >= set(titles) - vectors.searched
    # Shown, the papers the search did not find would have won: pure NeRF papers are closer to
    # the interest's text.
    stored = vectors.get(list(titles), with_vectors=True)
    alone = real_rank(
        await recommender.evidence(user),
        [p.paper_id for p in stored],
        np.stack([p.vector for p in stored]),
        k=2,
        space=await recommender.space(),
        exclude=frozenset({"lora-0"}),
    )
    assert not {r.paper_id for r in alone} <= vectors.searched
    await recommender.close()
    vectors.close()


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


async def test_while_recommend_runs_numpy_multiplies_on_one_thread_then_as_before(tmp_path):
    with threadpool_limits(limits=2, user_api="blas"):  # as on a machine with 2 cores or more
        before = blas_threads()
        assert before and set(before) == {2}
        vectors = QdrantEdgeStore(tmp_path / "qdrant")
        store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
        broker = RedisBroker()
        app = recommend_app(tmp_path, broker=broker, store=store, vectors=vectors)
        async with TestRedisBroker(broker), app.router.lifespan_context(app):
            assert set(blas_threads()) == {1}
        assert blas_threads() == before
        vectors.close()
        store.close()


async def test_the_api_hands_ranking_its_candidates_whitened_reference_papers_as_kept(
    tmp_path, monkeypatch
):
    """The reference papers are kept whitened from the space fit, the papers found are whitened
    for the request: what ranking is handed, joined, is what it would have computed itself."""
    encoder = HashingEncoder(dim=16)  # 80 papers fit a 16-d space (Space.MIN_PAPERS_PER_DIM)
    titles = {f"nerf-{i}": f"neural radiance fields scene {i}" for i in range(40)}
    titles |= {f"lora-{i}": f"low-rank adapters LoRA variant {i}" for i in range(40)}
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    vectors.upsert(stored_papers(titles, encoder, at=1.0))
    recommender, store = recommend_over(tmp_path, vectors, encoder)
    interest = Interest("lora", text="low-rank adapters", seed_paper_ids=["lora-0"])
    user = store.create_user("a@example.org", "daily", 5, [interest], datetime.now(UTC))
    space = await recommender.space()
    assert space is not None
    recommender._index_papers()  # the background pass: every paper catalogued
    handed = []
    real_rank = recommender_module.rank

    def spy(evidence: Any, paper_ids: Any, vectors: Any, *args: Any, **kwargs: Any) -> Any:
        handed.append((vectors, kwargs["whitened"]))
        return real_rank(evidence, paper_ids, vectors, *args, **kwargs)

    monkeypatch.setattr(recommender_module, "rank", spy)

    assert await recommender.recommend(user, 3)
    [(raw, whitened)] = handed
    # All 80: the searches found some, the reference papers (every paper here) are the rest.
    assert whitened is not None and len(whitened) == len(raw) == len(titles)
    np.testing.assert_allclose(whitened, space.apply(raw), atol=1e-5)
    await recommender.close()
    vectors.close()
