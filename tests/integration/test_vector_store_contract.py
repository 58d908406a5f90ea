"""The vector-store contract, run on both real backends: Qdrant Edge on disk and qdrant-client.

qdrant-client's local mode (``QdrantClient(path=...)``) stands in for a Qdrant server: no server
binary can be installed here (STACK-NOTES.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as edge
from qdrant_client import QdrantClient

from paperwire.cli import main
from paperwire.stack import free_port
from paperwire_shared import vectors
from paperwire_shared.vectors import (
    QdrantEdgeStore,
    QdrantServerStore,
    StoredPaper,
    VectorDirInUse,
    VectorStore,
    open_vector_store,
    point_id,
)

# Local mode warns that payload indexes do nothing there; a server uses them.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

DIM = 16
OpenStore = Callable[[], VectorStore]


@pytest.fixture(params=["edge", "qdrant-local"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens a store of one backend, always on the same data dir (to test reopening)."""
    opened: list[VectorStore] = []

    def open_() -> VectorStore:
        if request.param == "edge":
            store: VectorStore = QdrantEdgeStore(tmp_path / "edge")
        else:
            store = QdrantServerStore(QdrantClient(path=str(tmp_path / "local")))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> VectorStore:
    return open_store()


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def paper(paper_id: str, vector: np.ndarray, **payload: object) -> StoredPaper:
    payload = {"embedded_at": 1000.0, "published_ts": 1000.0, **payload}
    return StoredPaper(paper_id, payload, vector)


def papers(vectors: np.ndarray) -> list[StoredPaper]:
    return [paper(f"p{i}", v) for i, v in enumerate(vectors)]


def test_an_empty_store_reads_empty_and_answers_ping(store: VectorStore) -> None:
    assert store.count() == 0
    assert store.get(["p0"], with_vectors=True) == []
    assert store.search(unit_vectors(1)[0], 5) == []
    assert store.embedded_since(0.0, 10) == []
    assert store.ping()


def test_get_returns_papers_in_the_order_asked_leaving_out_unknown_ids(store: VectorStore) -> None:
    store.upsert(papers(unit_vectors(3)))

    got = store.get(["p2", "nope", "p0"])

    assert [p.paper_id for p in got] == ["p2", "p0"]
    assert got[0].payload["paper_id"] == "p2"
    assert got[0].vector is None


def test_get_with_vectors_returns_the_stored_float32_vectors(store: VectorStore) -> None:
    vectors = unit_vectors(2)
    store.upsert(papers(vectors))

    got = store.get(["p1", "p0"], with_vectors=True)

    stored = [p.vector for p in got if isinstance(p.vector, np.ndarray)]
    assert [v.dtype for v in stored] == [np.float32, np.float32]
    np.testing.assert_allclose(np.stack(stored), vectors[[1, 0]], atol=1e-6)


def test_the_payload_is_stored_with_the_paper_id(store: VectorStore) -> None:
    store.upsert([paper("2401.00001", unit_vectors(1)[0], title="Attention", model="m")])

    [got] = store.get(["2401.00001"])

    assert got.payload == {
        "paper_id": "2401.00001",
        "title": "Attention",
        "model": "m",
        "embedded_at": 1000.0,
        "published_ts": 1000.0,
    }


def test_upserting_a_paper_twice_leaves_one_point_with_the_latest_payload(
    store: VectorStore,
) -> None:
    first, second = unit_vectors(2)
    store.upsert([paper("p0", first, title="old")])
    store.upsert([paper("p0", second, title="new")])

    assert store.count() == 1
    [got] = store.get(["p0"], with_vectors=True)
    assert got.payload["title"] == "new"
    assert got.vector is not None
    np.testing.assert_allclose(got.vector, second, atol=1e-6)


def test_search_returns_the_nearest_papers_best_first_with_their_payload(
    store: VectorStore,
) -> None:
    vectors = unit_vectors(20)
    store.upsert(papers(vectors))

    hits = store.search(vectors[7], 3)

    assert len(hits) == 3
    assert hits[0].paper_id == "p7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["paper_id"] == "p7"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_returns_the_stored_vectors_only_when_asked(store: VectorStore) -> None:
    vectors = unit_vectors(20)
    store.upsert(papers(vectors))

    [with_vector] = store.search(vectors[7], 1, with_vectors=True)
    [without] = store.search(vectors[7], 1)

    assert with_vector.vector is not None
    np.testing.assert_allclose(with_vector.vector, vectors[7], atol=1e-6)
    assert without.vector is None


def test_search_without_payload_gives_each_hit_its_paper_id_only(store: VectorStore) -> None:
    vectors = unit_vectors(20)
    store.upsert([paper(f"p{i}", v, title=f"t{i}") for i, v in enumerate(vectors)])

    [full] = store.search(vectors[7], 1)
    [bare] = store.search(vectors[7], 1, with_payload=False, with_vectors=True)

    assert full.payload["title"] == "t7"
    assert bare.paper_id == "p7" and bare.payload == {"paper_id": "p7"}
    np.testing.assert_allclose(bare.vector, vectors[7], atol=1e-6)


def test_search_returns_at_most_k_hits(store: VectorStore) -> None:
    store.upsert(papers(unit_vectors(5)))

    assert len(store.search(unit_vectors(1, seed=9)[0], 3)) == 3
    assert len(store.search(unit_vectors(1, seed=9)[0], 50)) == 5


def test_search_skips_excluded_papers(store: VectorStore) -> None:
    vectors = unit_vectors(10)
    store.upsert(papers(vectors))

    hits = store.search(vectors[3], 10, exclude={"p3", "p5"})

    assert {h.paper_id for h in hits} == {f"p{i}" for i in range(10)} - {"p3", "p5"}


def test_search_excluding_five_hundred_papers_still_finds_the_nearest_others(
    store: VectorStore,
) -> None:
    vectors = unit_vectors(520, seed=1)
    store.upsert(papers(vectors))
    query = unit_vectors(1, seed=2)[0]
    scores = vectors @ query
    # Exclude the 500 best: only over-fetching far past k, or a real filter, finds the rest.
    ranked = np.argsort(-scores)
    excluded = {f"p{i}" for i in ranked[:500]}

    hits = store.search(query, 5, exclude=excluded)

    assert [h.paper_id for h in hits] == [f"p{i}" for i in ranked[500:505]]


def test_search_keeps_only_papers_published_since_the_given_time(store: VectorStore) -> None:
    vectors = unit_vectors(6)
    store.upsert([paper(f"p{i}", v, published_ts=float(i)) for i, v in enumerate(vectors)])

    hits = store.search(vectors[0], 10, published_since=3.0)

    assert {h.paper_id for h in hits} == {"p3", "p4", "p5"}


def test_search_top_k_equals_a_numpy_brute_force_top_k(store: VectorStore) -> None:
    vectors = unit_vectors(300, seed=3)
    store.upsert(papers(vectors))

    for query in unit_vectors(5, seed=4):
        scores = vectors @ query
        expected = [f"p{i}" for i in np.argsort(-scores)[:10]]

        hits = store.search(query, 10)

        assert [h.paper_id for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:10], atol=1e-5)


def test_embedded_since_returns_recent_papers_with_vectors_at_most_limit(
    store: VectorStore,
) -> None:
    vectors = unit_vectors(6)
    store.upsert([paper(f"p{i}", v, embedded_at=float(i)) for i, v in enumerate(vectors)])

    recent = store.embedded_since(2.0, 10)
    capped = store.embedded_since(2.0, 2)

    assert {p.paper_id for p in recent} == {"p2", "p3", "p4", "p5"}
    assert all(p.vector is not None and p.vector.dtype == np.float32 for p in recent)
    assert len(capped) == 2
    assert {p.paper_id for p in capped} <= {"p2", "p3", "p4", "p5"}


def test_papers_since_pages_through_every_recent_paper_with_its_vector_and_the_fields_asked(
    store: VectorStore,
) -> None:
    assert list(store.papers_since(0.0)) == []  # no collection yet
    vectors = unit_vectors(7)
    store.upsert(
        [paper(f"p{i}", v, embedded_at=float(i), title=f"t{i}") for i, v in enumerate(vectors)]
    )

    pages = list(store.papers_since(2.0, ("title",), page=2))

    assert [len(page) for page in pages[:2]] == [2, 2] and sum(map(len, pages)) == 5
    found = {p.paper_id: p for page in pages for p in page}
    assert set(found) == {"p2", "p3", "p4", "p5", "p6"}
    for i in range(2, 7):
        assert found[f"p{i}"].payload == {"paper_id": f"p{i}", "title": f"t{i}"}
        assert found[f"p{i}"].vector is not None and found[f"p{i}"].vector.dtype == np.float32
        np.testing.assert_allclose(found[f"p{i}"].vector, vectors[i], atol=1e-6)


def test_papers_since_also_gives_papers_updated_since_though_embedded_before(
    store: VectorStore,
) -> None:
    vectors = unit_vectors(3)
    store.upsert(
        [paper(f"p{i}", v, embedded_at=1.0, updated_at=1.0) for i, v in enumerate(vectors)]
    )
    # A new version of p1 (or its popularity): embedded_at keeps its first value (embed's
    # planning.payload_for), updated_at moves.
    store.upsert([paper("p1", vectors[2], embedded_at=1.0, updated_at=9.0, title="v2")])

    found = [p for page in store.papers_since(5.0, ("title",)) for p in page]

    assert [(p.paper_id, p.payload["title"]) for p in found] == [("p1", "v2")]
    np.testing.assert_allclose(found[0].vector, vectors[2], atol=1e-6)


def test_papers_survive_closing_and_reopening_the_store(open_store: OpenStore) -> None:
    vectors = unit_vectors(4)
    store = open_store()
    store.upsert(papers(vectors))
    store.close()

    reopened = open_store()

    assert reopened.count() == 4
    assert reopened.search(vectors[2], 1)[0].paper_id == "p2"
    reopened.upsert([paper("p9", unit_vectors(1, seed=5)[0])])
    assert reopened.count() == 5


def test_a_closed_store_no_longer_answers_ping(store: VectorStore) -> None:
    store.upsert(papers(unit_vectors(1)))
    store.close()

    assert not store.ping()


def test_a_second_open_of_an_edge_data_dir_fails_with_a_clear_error(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    try:
        # Before the first upsert too: the shard does not exist yet, the lock already does.
        with pytest.raises(VectorDirInUse, match="one process per data dir"):
            QdrantEdgeStore(tmp_path)
        store.upsert(papers(unit_vectors(1)))
        with pytest.raises(VectorDirInUse, match=str(tmp_path)):
            QdrantEdgeStore(tmp_path)
    finally:
        store.close()

    reopened = QdrantEdgeStore(tmp_path)
    assert reopened.count() == 1
    reopened.close()


def test_a_new_edge_shard_keeps_payloads_in_memory(tmp_path: Path) -> None:
    # Read from Edge's default (mmap) a search's payloads cost ~10 ms more while their pages are
    # cold (bench/README.md); the shard's own config file records the choice.
    store = QdrantEdgeStore(tmp_path)
    try:
        store.upsert(papers(unit_vectors(1)))
    finally:
        store.close()
    (config,) = tmp_path.rglob("edge_config.json")
    assert json.loads(config.read_text())["payload_memory"] == "cached"


def edge_info(store: QdrantEdgeStore) -> edge.ShardInfo:
    shard = store._live()
    assert shard is not None
    return shard.info()


def test_a_new_edge_shard_indexes_full_segments_as_int8_and_still_finds_the_exact_nearest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thresholds of a few hundred 16-d papers instead of thousands of 384-d ones.
    monkeypatch.setattr(vectors, "EDGE_INDEX_AFTER_KB", 8)
    monkeypatch.setattr(vectors, "EDGE_SEGMENT_KB", 32)
    found = unit_vectors(2_000)
    store = QdrantEdgeStore(tmp_path)
    try:
        for start in range(0, len(found), 100):  # as embed writes: batch after batch
            store.upsert(papers(found)[start : start + 100])
        info = edge_info(store)
        assert info.segments_count > 2  # segments kept small: optimize() holds the process
        assert info.indexed_vectors_count >= 1_800
        rng = np.random.default_rng(1)
        for row in rng.choice(len(found), 20, replace=False):
            query = found[row] + 0.5 * unit_vectors(1, seed=int(row))[0]
            query /= np.linalg.norm(query)
            excluded = {f"p{i}" for i in rng.choice(len(found), 50, replace=False)}
            exact = [f"p{i}" for i in np.argsort(-(found @ query)) if f"p{i}" not in excluded]
            hits = store.search(query, 20, exclude=excluded)
            assert [h.paper_id for h in hits] == exact[:20]
    finally:
        store.close()


def test_an_edge_shard_created_without_the_int8_index_is_never_optimized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # optimize() would build such a shard the default HNSW graph: minutes at 100k papers.
    shard = edge.EdgeShard.create(
        str(tmp_path / "papers"),
        edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine),
            optimizers=edge.EdgeOptimizersConfig(indexing_threshold=8),
        ),
    )
    shard.close()
    found = unit_vectors(1_000)
    store = QdrantEdgeStore(tmp_path)
    try:
        for start in range(0, len(found), 100):
            store.upsert(papers(found)[start : start + 100])
        assert edge_info(store).indexed_vectors_count == 0
        hits = store.search(found[3], 5)
        assert hits[0].paper_id == "p3"
    finally:
        store.close()


def old_edge_shard(path: Path, found: np.ndarray) -> None:
    """A shard as paperwire created it before the int8 index, holding ``found`` as ``papers``."""
    shard = edge.EdgeShard.create(
        str(path / "papers"),
        edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine)),
    )
    shard.update(
        edge.UpdateOperation.upsert_points(
            [
                edge.Point(
                    point_id(p.paper_id), p.vector.tolist(), {**p.payload, "paper_id": p.paper_id}
                )
                for p in papers(found)
                if p.vector is not None
            ]
        )
    )
    shard.close()


def test_an_edge_shard_created_before_a_payload_index_gets_it_when_opened(tmp_path: Path) -> None:
    old_edge_shard(tmp_path, unit_vectors(3))  # created with no payload index at all
    store = QdrantEdgeStore(tmp_path)
    try:
        assert set(vectors._FLOAT_FIELDS) <= set(edge_info(store).payload_schema)
        assert {p.paper_id for page in store.papers_since(0.0) for p in page} == {"p0", "p1", "p2"}
    finally:
        store.close()


def test_rebuilding_an_old_edge_shard_gives_it_the_int8_index_and_keeps_every_paper_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectors, "EDGE_INDEX_AFTER_KB", 8)
    monkeypatch.setattr(vectors, "EDGE_SEGMENT_KB", 32)
    monkeypatch.setattr(vectors, "PAGE", 300)
    found = unit_vectors(1_000)
    old_edge_shard(tmp_path, found)
    ids = [f"p{i}" for i in range(len(found))]
    store = QdrantEdgeStore(tmp_path)
    try:
        before = store.get(ids, with_vectors=True)
        searched = [h.paper_id for h in store.search(found[7], 20)]
        seen: list[tuple[int, int]] = []
        assert store.rebuild(lambda copied, total: seen.append((copied, total))) == 1_000
        assert seen == [(300, 1_000), (600, 1_000), (900, 1_000), (1_000, 1_000)]
        assert edge_info(store).indexed_vectors_count > 0
        after = store.get(ids, with_vectors=True)
        assert [p.payload for p in after] == [p.payload for p in before]
        for old, new in zip(before, after, strict=True):
            np.testing.assert_array_equal(old.vector, new.vector)
        assert [h.paper_id for h in store.search(found[7], 20)] == searched
        assert store.rebuild() == 0  # already rebuilt
    finally:
        store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "papers"]
    reopened = QdrantEdgeStore(tmp_path)
    try:
        assert reopened.count() == 1_000
        assert edge_info(reopened).indexed_vectors_count > 0
    finally:
        reopened.close()


@pytest.mark.parametrize("stopped_after", ["first rename", "second rename"])
def test_a_rebuild_stopped_in_its_swap_is_finished_when_the_store_next_opens(
    tmp_path: Path, stopped_after: str
) -> None:
    found = unit_vectors(50)
    old_edge_shard(tmp_path, found)
    (tmp_path / "papers").rename(tmp_path / "papers.replaced")
    if stopped_after == "second rename":  # the new shard is in place; the old one lingers
        old_edge_shard(tmp_path, found[:10])
    store = QdrantEdgeStore(tmp_path)
    try:
        assert store.count() == (50 if stopped_after == "first rename" else 10)
    finally:
        store.close()
    assert not (tmp_path / "papers.replaced").exists()


def test_paperwire_reindex_rebuilds_the_shard_and_refuses_while_it_is_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_edge_shard(tmp_path / "qdrant", unit_vectors(30))
    store = QdrantEdgeStore(tmp_path / "qdrant")
    try:
        with pytest.raises(SystemExit) as refused:
            main(["--data-dir", str(tmp_path), "reindex"])
        assert refused.value.code == 2
        assert "stop it first" in capsys.readouterr().err
    finally:
        store.close()
    main(["--data-dir", str(tmp_path), "reindex"])
    printed = capsys.readouterr()
    assert "rebuilt" in printed.out and "30 papers" in printed.out
    assert "copied 30/30 papers" in printed.err
    main(["--data-dir", str(tmp_path), "reindex"])
    assert "needs no rebuild" in capsys.readouterr().out


def test_paperwire_reindex_explains_that_a_qdrant_server_needs_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    with pytest.raises(SystemExit) as refused:
        main(["--data-dir", str(tmp_path), "reindex"])
    assert refused.value.code == 2
    assert "Qdrant server keeps its own index" in capsys.readouterr().err


def test_open_vector_store_uses_edge_on_disk_without_a_url(tmp_path: Path) -> None:
    store = open_vector_store(None, tmp_path)
    try:
        assert isinstance(store, QdrantEdgeStore)
    finally:
        store.close()


# QdrantClient(url=...) asks the server for its version in a background thread and warns when none
# answers; the test waits for that thread so the warning lands (ignored) here, not in a later test.
@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
def test_open_vector_store_uses_a_server_with_a_url_and_pings_false_when_none_listens() -> None:
    store = open_vector_store(f"http://127.0.0.1:{free_port()}", Path("unused"))
    try:
        assert isinstance(store, QdrantServerStore)
        assert not store.ping()
    finally:
        store.close()
        for thread in threading.enumerate():
            if "_check_compatibility" in thread.name:
                thread.join()
