"""The catalogue: what ranking needs of every stored paper, held in memory (catalogue.py)."""

from __future__ import annotations

import gc

import numpy as np

from paperwire_recommend.catalogue import Candidates, Catalogue
from paperwire_recommend.ranking import Space
from paperwire_shared.vectors import StoredPaper


def paper(paper_id: str, vector: np.ndarray, **payload: object) -> StoredPaper:
    fields = {"paper_id": paper_id, "title": f"title of {paper_id}", "abstract": "", **payload}
    return StoredPaper(paper_id, fields, vector)


def unit_rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def assert_same(found: Candidates, expected: Candidates) -> None:
    assert found.ids == expected.ids
    np.testing.assert_array_equal(found.vectors, expected.vectors)
    assert [set(w.tolist()) for w in found.words] == [set(w.tolist()) for w in expected.words]
    assert found.facts.categories == expected.facts.categories
    assert found.facts.authors == expected.facts.authors
    np.testing.assert_array_equal(found.facts.published, expected.facts.published)
    np.testing.assert_array_equal(found.facts.popularity, expected.facts.popularity)


def test_catalogued_papers_rank_as_the_stored_papers_would_in_the_order_asked():
    vectors = unit_rows(3)
    papers = [
        paper("a", vectors[0], abstract="LoRA adapters", categories=["cs.CL"], published_ts=5.0),
        paper("b", vectors[1], authors=["A. Writer"], popularity=3),
        paper("c", vectors[2], title="Gaussian splats"),
    ]
    catalogue = Catalogue()
    catalogue.add(papers)

    found = catalogue.candidates(["c", "unknown", "a", "b"])

    assert len(catalogue) == 3 and "a" in catalogue and "unknown" not in catalogue
    assert_same(found, Candidates.of([papers[2], papers[0], papers[1]]))
    held = catalogue.papers(["b", "unknown"])
    assert list(held) == ["b"] and held["b"].payload["title"] == "title of b"


def test_a_paper_embedded_again_is_rewritten_in_its_row():
    old, new = unit_rows(2)
    catalogue = Catalogue()
    catalogue.add([paper("a", old), paper("b", old)])
    catalogue.add([paper("a", new, title="a new title")])

    found = catalogue.candidates(["a", "b"])

    assert len(catalogue) == 2
    np.testing.assert_array_equal(found.vectors, np.stack([new, old]))
    assert catalogue.papers(["a"])["a"].payload["title"] == "a new title"


def test_rows_stay_right_as_the_catalogue_grows_and_a_reader_keeps_what_it_read():
    vectors = unit_rows(5_000)
    papers = [paper(f"p{i}", v, published_ts=float(i)) for i, v in enumerate(vectors)]
    catalogue = Catalogue()
    catalogue.add(papers[:10])
    before = catalogue.candidates(["p3", "p9"])
    for start in range(10, len(papers), 700):  # grows several times
        catalogue.add(papers[start : start + 700])

    asked = ["p4999", "p3", "p1234", "p9"]
    assert_same(catalogue.candidates(asked), Candidates.of([papers[int(p[1:])] for p in asked]))
    assert_same(before, Candidates.of([papers[3], papers[9]]))


def test_vectors_of_another_size_start_the_catalogue_afresh():
    catalogue = Catalogue()
    catalogue.add([paper("a", unit_rows(1, dim=8)[0]), paper("b", unit_rows(1, dim=8)[0])])
    bigger = unit_rows(1, dim=16)[0]
    catalogue.add([paper("a", bigger)])  # the store was rebuilt for another model

    assert len(catalogue) == 1 and "b" not in catalogue
    np.testing.assert_array_equal(catalogue.candidates(["a"]).vectors, bigger[None, :])


def test_candidates_keep_their_whitened_vectors_through_select_and_join_in_one_space_only():
    space = Space.fit(unit_rows(100, seed=2))
    other = Space.fit(unit_rows(100, seed=4))
    catalogue = Catalogue()
    catalogue.add([paper(f"p{i}", v) for i, v in enumerate(unit_rows(4))])
    held = catalogue.candidates(["p0", "p1", "p2"])
    assert held.whitened_in(space) is None  # the catalogue keeps none

    kept = held.in_space(space)
    np.testing.assert_allclose(kept.whitened_in(space), space.apply(held.vectors), atol=1e-6)  # type: ignore[arg-type]
    assert kept.in_space(space) is kept and kept.whitened_in(other) is None
    np.testing.assert_allclose(
        kept.select([2, 0]).whitened_in(space),  # type: ignore[arg-type]
        space.apply(held.vectors[[2, 0]]),
        atol=1e-6,
    )
    read = Candidates.of([paper("new", unit_rows(1, seed=5)[0])])
    both = kept + read.in_space(space)
    assert both.ids == ["p0", "p1", "p2", "new"]
    np.testing.assert_allclose(both.whitened_in(space), space.apply(both.vectors), atol=1e-6)  # type: ignore[arg-type]
    assert (kept + read).whitened_in(space) is None
    assert (read + kept).whitened_in(space) is None
    assert (kept + read.in_space(other)).whitened_in(space) is None


def walked() -> int:
    """What a full pass of the garbage collector visits: every tracked object's references."""
    return len(gc.get_referents(*gc.get_objects()))


def test_the_catalogue_gives_the_garbage_collector_nothing_to_walk_per_paper():
    """Each full collection visits what tracked objects refer to, in the middle of a request:
    held in lists, 100k papers' words, titles, categories and authors were ~400k visits."""
    vectors = unit_rows(2_000)

    def add(catalogue: Catalogue, rows: range) -> None:  # the papers are let go on return
        catalogue.add(
            [
                paper(f"p{i}", vectors[i], abstract="LoRA", categories=["cs.CL"], authors=["A. B"])
                for i in rows
            ]
        )

    catalogue = Catalogue()
    add(catalogue, range(10))
    gc.collect()
    before = walked()
    add(catalogue, range(10, 2_000))
    gc.collect()
    assert walked() - before < 200  # in lists: 4 per paper, ~8,000
    found = catalogue.candidates(["p1999", "p3"])
    assert found.facts.categories == [("cs.CL",), ("cs.CL",)]
    assert found.facts.authors == [("A. B",), ("A. B",)]
    assert catalogue.papers(["p1999"])["p1999"].payload["title"] == "title of p1999"
