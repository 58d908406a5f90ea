"""The catalogue: what ranking needs of every stored paper, held in memory (catalogue.py)."""

from __future__ import annotations

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


def test_whitened_rows_are_the_space_applied_to_each_paper_added_before_or_after_or_again():
    vectors = unit_rows(300, seed=1)
    space = Space.fit(unit_rows(100, seed=2))
    assert space is not None
    papers = [paper(f"p{i}", v) for i, v in enumerate(vectors)]
    catalogue = Catalogue()
    catalogue.add(papers[:10])
    catalogue.whiten(space)
    for start in range(10, 300, 70):  # added after, growing the arrays
        catalogue.add(papers[start : start + 70])
    again = unit_rows(1, seed=3)[0]
    catalogue.add([paper("p5", again)])  # embedded again

    asked = ["p299", "p5", "p7", "p150"]
    found = catalogue.candidates(asked)

    expected = space.apply(np.stack([vectors[299], again, vectors[7], vectors[150]]))
    np.testing.assert_allclose(found.whitened_in(space), expected, atol=1e-6)
    assert found.whitened_in(Space.fit(unit_rows(100, seed=4))) is None  # another fit
    np.testing.assert_allclose(found.select([2, 0]).whitened_in(space), expected[[2, 0]], atol=1e-6)
    catalogue.whiten(None)
    assert catalogue.candidates(asked).whitened_in(space) is None


def test_candidates_joined_stay_whitened_only_if_both_halves_are_in_the_same_space():
    space = Space.fit(unit_rows(100, seed=2))
    catalogue = Catalogue()
    catalogue.add([paper(f"p{i}", v) for i, v in enumerate(unit_rows(4))])
    catalogue.whiten(space)
    held = catalogue.candidates(["p0", "p1"])
    also_held = catalogue.candidates(["p2"])
    read = Candidates.of([paper("new", unit_rows(1, seed=5)[0])])  # not whitened

    both = held + also_held
    np.testing.assert_allclose(
        both.whitened_in(space), space.apply(both.vectors), atol=1e-6  # type: ignore[union-attr]
    )
    assert (held + read).whitened_in(space) is None
    assert (read + held).whitened_in(space) is None
    assert (held + read).ids == ["p0", "p1", "new"]
