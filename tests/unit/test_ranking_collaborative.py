"""Co-saves (collaborative.CoSaves): what readers of a user's papers also saved."""

from __future__ import annotations

import numpy as np
import pytest

from paperwire_recommend import collaborative
from paperwire_recommend.collaborative import CoSaves, Nearest

LIBRARIES = {
    "r1": ["mine", "often", "rare"],
    "r2": ["mine", "often"],
    "r3": ["mine", "often"],
    "r4": ["elsewhere", "unrelated"],
}


def pairs() -> list[tuple[str, str]]:
    return [(reader, paper) for reader, papers in LIBRARIES.items() for paper in papers]


def test_papers_co_saved_more_often_score_higher_and_strangers_score_zero():
    cosaves = CoSaves(pairs())
    often, rare, unrelated, unknown = cosaves.scores(
        ["mine"], ["often", "rare", "unrelated", "never-saved"]
    )
    assert often > rare > 0
    assert unrelated == unknown == 0


def test_the_corpus_scale_is_the_scores_mean_and_std_over_every_paper_but_the_users_own():
    cosaves = CoSaves(pairs())
    corpus = ["mine", "often", "rare", "elsewhere", "unrelated"] + [
        f"unsaved{i}" for i in range(45)
    ]
    scores = cosaves.scores(["mine"], corpus[1:])  # 49 papers, "mine" left out
    mean, std = cosaves.corpus_scale(["mine"], len(corpus))
    assert mean == pytest.approx(scores.mean()) and std == pytest.approx(scores.std())
    assert mean > 0 and std > 0


def test_neighbours_leave_out_the_users_own_papers():
    cosaves = CoSaves(pairs())
    assert cosaves.neighbours(["mine"], 5) == ["often", "rare"]
    assert cosaves.neighbours(["never-saved"], 5) == []


def test_a_walk_repeated_for_the_same_library_is_the_same_whatever_its_caller_did_with_it():
    cosaves = CoSaves(pairs())
    first = cosaves.walk(["mine"])
    expected = first.copy()
    first[:] = -1  # neighbours() and carried() zero the user's own papers in what they get
    again = cosaves.walk(["mine"])
    assert np.array_equal(again, expected)
    again[:] = -1
    assert np.array_equal(cosaves.walk(["mine"]), expected)
    assert not np.array_equal(cosaves.walk(["mine"], alpha=0.5), expected)
    assert not np.array_equal(cosaves.walk(["elsewhere"]), expected)
    assert np.array_equal(cosaves.walk(["mine"]), expected)


def test_walks_at_two_alphas_in_turn_are_each_what_a_fresh_build_walks():
    cosaves = CoSaves(pairs())
    for _ in range(2):  # a request walks at this build's alpha and at CARRIED_ALPHA
        for alpha in (None, 0.5):
            fresh = CoSaves(pairs()).walk(["mine"], alpha)
            assert np.array_equal(cosaves.walk(["mine"], alpha), fresh)


def test_beta_discounts_papers_that_everyone_saves():
    # "often" is co-saved 3 times but saved by 3 readers; "rare" once, by 1 reader.
    flat = CoSaves(pairs(), beta=0.0).scores(["mine"], ["often", "rare"])
    penalised = CoSaves(pairs(), beta=1.0).scores(["mine"], ["often", "rare"])
    # 3 savers against 1: with beta 1 the ratio shrinks threefold.
    assert flat[0] / flat[1] == pytest.approx(3 * penalised[0] / penalised[1])


def test_alpha_below_one_lets_a_long_library_pass_on_more_to_each_of_its_papers():
    # Both readers saved "mine": one 2 papers ("small"'s), the other 10 ("big"'s among them).
    long = [("big-reader", f"other{i}") for i in range(8)]
    pairs = [("small-reader", "mine"), ("small-reader", "small"), ("big-reader", "mine")]
    pairs += [("big-reader", "big"), *long]
    walk = CoSaves(pairs, beta=0.0, alpha=1.0).scores(["mine"], ["small", "big"])
    softened = CoSaves(pairs, beta=0.0, alpha=0.5).scores(["mine"], ["small", "big"])
    # A plain walk splits each reader's share over their library: 1/2 against 1/10, 5 times.
    assert walk[0] / walk[1] == pytest.approx(5)
    assert softened[0] / softened[1] == pytest.approx(5**0.5)


def test_the_same_save_twice_counts_once_and_no_saves_is_empty():
    assert len(CoSaves([("r", "p"), ("r", "p")])) == 1
    empty = CoSaves([])
    assert len(empty) == 0 and empty.scores(["p"], ["q"]).tolist() == [0.0]


def unit(*weights: float) -> np.ndarray:
    vector = np.asarray(weights, np.float32)
    return vector / np.linalg.norm(vector)


# Saved papers' topics: "mine" and "often" are saved together; "elsewhere" and "unrelated" too.
TOPICS = {
    "mine": unit(1, 0, 0, 0),
    "often": unit(0, 1, 0, 0),
    "rare": unit(0, 1, 0.3, 0),
    "elsewhere": unit(0, 0, 1, 0),
    "unrelated": unit(0, 0, 0, 1),
}


@pytest.fixture
def carrying(monkeypatch: pytest.MonkeyPatch) -> CoSaves:
    monkeypatch.setattr(collaborative, "NEIGHBOURS", 1)
    return attached(CoSaves(pairs()), TOPICS)


def attached(cosaves: CoSaves, vectors: dict[str, np.ndarray]) -> CoSaves:
    nearest = Nearest()
    nearest.sync(vectors)
    cosaves.attach(nearest)
    return cosaves


def test_a_new_paper_like_one_that_readers_of_mine_saved_is_carried_their_co_saves(carrying):
    new_like_often, new_like_unrelated = unit(0.1, 1, 0, 0), unit(0, 0, 0.1, 1)
    carried, crowding = carrying.carried(
        ["mine"], ["new-a", "new-b"], np.stack([new_like_often, new_like_unrelated])
    )
    assert carried[0] > 0 and carried[1] == 0
    # With one neighbour, crowding is the cosine to it.
    assert crowding[0] == pytest.approx(float(new_like_often @ TOPICS["often"]))


def test_a_paper_with_savers_of_its_own_gets_no_carried_score(carrying):
    carried, crowding = carrying.carried(["mine"], ["often"], TOPICS["often"][None, :])
    assert np.isnan(carried[0]) and np.isnan(crowding[0])


def test_carrying_needs_vectors_and_more_saved_papers_than_neighbours():
    assert CoSaves(pairs()).carried(["mine"], ["new"], unit(1, 0, 0, 0)[None, :]) is None
    few = attached(CoSaves(pairs()), TOPICS)  # 5 saved papers, 20 neighbours wanted
    assert few.carried(["mine"], ["new"], unit(1, 0, 0, 0)[None, :]) is None


def test_only_the_new_papers_closest_to_the_users_evidence_are_carried_to(carrying, monkeypatch):
    monkeypatch.setattr(collaborative, "SHORTLIST_PER_PAPER", 1)
    vectors = np.stack([unit(0.1, 1, 0, 0), unit(0.2, 1, 0, 0)])  # "new-b" is nearer "mine"
    evidence = TOPICS["mine"][None, :]
    carried, _ = carrying.carried(["mine"], ["new-a", "new-b"], vectors, evidence, k=1)
    assert np.isnan(carried[0]) and carried[1] > 0


def brute_force(vectors: np.ndarray, saved: dict[str, np.ndarray], k: int) -> list[set[str]]:
    ids = list(saved)
    sims = vectors @ np.stack([saved[p] for p in ids]).T
    return [{ids[j] for j in np.argsort(-row)[:k]} for row in sims]


def test_nearest_saved_papers_stay_exact_as_papers_are_saved_and_unsaved(monkeypatch):
    monkeypatch.setattr(collaborative, "NEIGHBOURS", 5)
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((200, 8)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    every = {f"s{i}": pool[i] for i in range(150)}
    papers, vectors = [f"new{i}" for i in range(150, 200)], pool[150:]
    nearest = Nearest()
    compared_from = []
    best = Nearest._best

    def counted(saved, first, vectors, earlier):
        compared_from.append(first)
        return best(saved, first, vectors, earlier)

    monkeypatch.setattr(Nearest, "_best", staticmethod(counted))
    # Saved papers come (60, then 40 more), one goes, a few come back.
    steps = [list(every)[:60], list(every)[:100], list(every)[1:100], list(every)[1:110]]
    for step, saved_ids in enumerate(steps):
        saved = {p: every[p] for p in saved_ids}
        nearest.sync(saved)
        compared_from.clear()
        rows, cosines, ids = nearest.find(papers, vectors)
        assert [{ids[r] for r in found} for found in rows] == brute_force(vectors, saved, 5)
        assert all(nearest.known(p) for p in papers)
        if step == 1:  # only the 40 papers saved since were compared
            assert compared_from == [60]
    assert nearest.fresh_starts == 0


def test_nearest_starts_afresh_when_most_saved_papers_are_gone(monkeypatch):
    monkeypatch.setattr(collaborative, "NEIGHBOURS", 1)
    nearest = Nearest()
    nearest.sync(TOPICS)
    nearest.find(["new"], unit(0.1, 1, 0, 0)[None, :])
    nearest.sync({p: TOPICS[p] for p in ("mine", "elsewhere")})
    assert nearest.fresh_starts == 1 and len(nearest) == 2 and not nearest.known("new")
    rows, _, ids = nearest.find(["new"], unit(0.1, 1, 0, 0)[None, :])
    assert ids[rows[0][0]] == "mine"


def test_carried_co_saves_follow_a_rebuild_that_saved_more_papers(carrying):
    # The same Nearest serves the next build: its rows map onto that build's columns.
    vectors = np.stack([unit(0, 0, 0.1, 1)])
    before, _ = carrying.carried(["mine"], ["new"], vectors)
    assert before[0] == 0  # like "unrelated", which no reader of mine saved
    nearest = carrying._nearest
    assert nearest is not None
    rebuilt = CoSaves([*pairs(), ("r1", "unrelated")])
    nearest.sync(TOPICS)
    rebuilt.attach(nearest)
    after, _ = rebuilt.carried(["mine"], ["new"], vectors)
    assert after[0] > 0
