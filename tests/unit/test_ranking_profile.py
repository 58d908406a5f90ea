"""The one ranking path (ranking.rank): interests, feedback evidence, dislikes, rules, knobs, space."""

from __future__ import annotations

import numpy as np
import pytest

from paperwire_recommend.collaborative import CoSaves
from paperwire_recommend.ranking import (
    COLLABORATIVE_WEIGHT,
    Evidence,
    Facts,
    Knobs,
    Rules,
    Space,
    collaborative_weight,
    rank,
)


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_each_interest_gets_its_own_papers_when_one_topic_is_far_more_crowded():
    # Ten LLM papers score higher than any 3D paper; the 3D interest still gets every other turn.
    llm = [f"llm{i}" for i in range(10)]
    ids = [*llm, "3d-a", "3d-b"]
    vectors = np.stack(
        [unit(1, 0.01 * i, 0) for i in range(10)] + [unit(0.2, 1, 0.3), unit(0.2, 1, 0.4)]
    )
    evidence = [Evidence("llm", unit(1, 0, 0)), Evidence("3d", unit(0, 1, 0))]
    top = rank(evidence, ids, vectors, k=4)
    assert {r.paper_id for r in top} == {"llm0", "llm1", "3d-a", "3d-b"}
    assert {r.interest for r in top if r.paper_id.startswith("3d")} == {"3d"}


def test_a_user_with_two_unrelated_seed_papers_is_not_given_their_average():
    # The average of the two seeds points at "between", which neither interest asked for.
    ids = ["between", "near-a", "near-b"]
    vectors = np.stack([unit(1, 1, 0), unit(1, 0.1, 0), unit(0.1, 1, 0)])
    evidence = [
        Evidence("a", unit(1, 0, 0), seed_title="A"),
        Evidence("b", unit(0, 1, 0), seed_title="B"),
    ]
    assert {r.paper_id for r in rank(evidence, ids, vectors, k=2)} == {"near-a", "near-b"}


def test_a_disliked_topic_pushes_similar_papers_down():
    ids = ["like-dislike", "plain"]
    vectors = np.stack([unit(1, 0.1, 0.2), unit(1, 0.25, -0.2)])
    evidence = [Evidence("x", unit(1, 0, 0))]
    before = [r.paper_id for r in rank(evidence, ids, vectors, k=2)]
    after = rank(evidence, ids, vectors, k=2, dislikes=np.stack([unit(0.2, 0.3, 1)]))
    assert before == ["like-dislike", "plain"]
    assert [r.paper_id for r in after] == ["plain", "like-dislike"]


def test_excluded_papers_are_never_ranked_however_relevant():
    ids = ["sent", "disliked", "fresh"]
    vectors = np.stack([unit(1, 0, 0), unit(1, 0.01, 0), unit(1, 1, 0)])
    top = rank([Evidence("x", unit(1, 0, 0))], ids, vectors, k=3, exclude={"sent", "disliked"})
    assert [r.paper_id for r in top] == ["fresh"]


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("liked", 'you liked "Paper Y" (interest "z")'),
        ("saved", 'you saved "Paper Y" (interest "z")'),
        ("clicked", 'you opened "Paper Y" (interest "z")'),
        ("", 'close to your seed paper "Paper Y" (interest "z")'),
    ],
)
def test_the_reason_cites_the_users_own_evidence(kind, expected):
    evidence = [
        Evidence("z", unit(0, 0, 1), text="something else"),
        Evidence("z", unit(1, 0, 0), seed_title="Paper Y", kind=kind),
    ]
    [top] = rank(evidence, ["p"], np.stack([unit(1, 0.1, 0)]), k=1)
    assert top.reason == expected


def test_co_saves_lift_what_readers_of_the_users_papers_also_saved():
    # Two close contenders among papers on other topics, which give relevance its spread.
    ids = ["co-saved", "alone", "far1", "far2"]
    vectors = np.stack([unit(1, 0.12, 0), unit(1, 0.1, 0), unit(0, 1, 0), unit(0, 0, 1)])
    cosaves = CoSaves([("r1", "mine"), ("r1", "co-saved"), ("r2", "mine"), ("r2", "co-saved")])
    collaborative = cosaves.scores(["mine"], ids)
    assert collaborative[0] > 0 and not collaborative[1:].any()
    evidence = [Evidence("x", unit(1, 0, 0), seed_title="Mine", paper_id="mine")]
    assert rank(evidence, ids, vectors, k=1)[0].paper_id == "alone"
    top = rank(evidence, ids, vectors, k=1, collaborative=collaborative)
    assert top[0].paper_id == "co-saved"
    assert top[0].reason.endswith("also saved by readers of your papers")


def test_co_saves_weigh_more_for_a_larger_library():
    # "alone" is far more relevant than "co-saved", which readers of the user's papers also saved.
    ids = ["co-saved", "alone", *(f"far{i}" for i in range(6))]
    vectors = np.stack(
        [unit(0.3, 0.95, 0), unit(1, 0.1, 0)] + [unit(0, 0.1 * i, 1) for i in range(6)]
    )
    collaborative = np.asarray([1.0, *[0.0] * 7])

    def best(papers: int) -> str:
        evidence = [
            Evidence("x", unit(1, 0, 0), kind="saved", paper_id=f"p{i}") for i in range(papers)
        ]
        return rank(evidence, ids, vectors, k=1, collaborative=collaborative)[0].paper_id

    assert best(10) == "alone"
    # The same relevance, from 100 papers whose readers' other saves agree on "co-saved".
    assert best(100) == "co-saved"
    # Papers count once however many interests hold them; text evidence is no paper.
    shared = [Evidence(name, unit(1, 0, 0), paper_id=f"p{i}") for name in "ab" for i in range(30)]
    assert collaborative_weight(shared) == pytest.approx(COLLABORATIVE_WEIGHT * 1.5)
    assert (
        collaborative_weight([Evidence("x", unit(1, 0, 0), text="x")] * 50) == COLLABORATIVE_WEIGHT
    )


def test_a_bounded_set_measured_on_its_random_sample_ranks_as_every_paper_would():
    # As the API ranks: the papers nearest the evidence and the most co-saved, plus papers drawn at
    # random (never shown unless found) that set the scales. Relevance's spread measured over the
    # random ones (scale_rows) gives the order a ranking of every paper gives; measured over the
    # whole bounded set, mostly close to the user, it does not.
    same = {"bounded set": 0, "random sample": 0}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        vectors = rng.normal(size=(2000, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"p{i}" for i in range(2000)]
        co_saves = np.where(rng.random(2000) < 0.1, rng.exponential(1, 2000), 0.0)
        kwargs = {"k": 10, "collaborative_scale": (co_saves.mean(), co_saves.std())}
        evidence = [Evidence("x", vectors[0], kind="saved", paper_id="p0")]
        every = rank(evidence, ids, vectors, collaborative=co_saves, exclude={"p0"}, **kwargs)
        found = np.concatenate(
            [np.argsort(-(vectors @ vectors[0]))[:100], np.argsort(-co_saves)[:100]]
        )
        drawn = rng.choice(2000, 300, replace=False)
        rows = np.unique(np.concatenate([found, drawn]))
        hidden = {ids[i] for i in set(rows.tolist()) - set(found.tolist())} | {"p0"}
        for name, scale_rows in (("bounded set", None), ("random sample", np.isin(rows, drawn))):
            top = rank(
                evidence,
                [ids[i] for i in rows],
                vectors[rows],
                collaborative=co_saves[rows],
                exclude=hidden,
                scale_rows=scale_rows,
                **kwargs,
            )
            same[name] += [r.paper_id for r in top] == [r.paper_id for r in every]
    # 0 and 4 of 6 here; the bounds leave room for another BLAS's last bits.
    assert same["bounded set"] <= 1
    assert same["random sample"] >= 4


def test_carried_co_saves_lift_a_brand_new_paper_and_crowding_lowers_one_like_everything():
    # Eight new papers nobody saved; "plain" is a little more relevant than "carried". "carried" is
    # like papers that readers of the user's library saved; "plain" is like everybody's library.
    ids = ["carried", "plain", *(f"far{i}" for i in range(6))]
    vectors = np.stack(
        [unit(1, 0.12, 0), unit(1, 0.1, 0)] + [unit(0, 1, 0.1 * i) for i in range(6)]
    )
    evidence = [Evidence("x", unit(1, 0, 0), seed_title="Mine", paper_id="mine")]
    assert rank(evidence, ids, vectors, k=1)[0].paper_id == "plain"
    carried = np.asarray([1.0, *[0.0] * 7])
    top = rank(evidence, ids, vectors, k=1, carried=carried)
    assert top[0].paper_id == "carried"
    assert top[0].reason.endswith("like papers that readers of yours saved")
    crowding = np.asarray([0.1, 0.9, *[0.1] * 6])
    assert rank(evidence, ids, vectors, k=1, crowding=crowding)[0].paper_id == "carried"


def test_rules_exclude_words_and_categories_and_boost_followed_authors():
    ids = ["survey", "cs.CV", "by-ada", "other"]
    vectors = np.stack([unit(1, 0, 0), unit(1, 0.05, 0), unit(1, 0.4, 0), unit(1, 0.3, 0)])
    texts = ["A survey of LoRA", "LoRA for images", "LoRA tricks", "LoRA at scale"]
    facts = Facts(
        categories=[("cs.CL",), ("cs.CV",), ("cs.CL",), ("cs.CL",)],
        authors=[("Bo",), ("Bo",), ("Ada Lovelace",), ("Bo",)],
    )
    rules = Rules(
        exclude_keywords=("survey",), exclude_categories=("cs.CV",), authors=("ada lovelace",)
    )
    top = rank(
        [Evidence("peft", unit(1, 0, 0))],
        ids,
        vectors,
        k=4,
        texts=texts,
        facts=facts,
        rules={"peft": rules},
    )
    assert [r.paper_id for r in top] == ["by-ada", "other"]
    assert top[0].reason.endswith("by Ada Lovelace, whom you follow")


def test_include_categories_restrict_an_interest_and_include_keywords_boost():
    ids = ["cl-plain", "cl-keyword", "lg"]
    vectors = np.stack([unit(1, 0.1, 0), unit(1, 0.15, 0), unit(1, 0, 0)])
    texts = ["Tuning models", "Tuning models with adapters", "Tuning"]
    facts = Facts(categories=[("cs.CL",), ("cs.CL",), ("cs.LG",)])
    rules = {"x": Rules(include_categories=("cs.CL",), include_keywords=("adapters",))}
    evidence = [Evidence("x", unit(1, 0, 0))]
    top = rank(evidence, ids, vectors, k=3, texts=texts, facts=facts, rules=rules)
    assert [r.paper_id for r in top] == ["cl-keyword", "cl-plain"]
    assert top[0].reason == 'matches your interest "x"; mentions "adapters"'


def test_recency_and_popularity_knobs_break_ties_and_zero_turns_them_off():
    ids = ["old-popular", "new-quiet"]
    vectors = np.stack([unit(1, 0.1, 0), unit(1, 0.1, 0)])
    day = 86_400.0
    facts = Facts(published=np.array([0.0, 300 * day]), popularity=np.array([500.0, 0.0]))
    evidence = [Evidence("x", unit(1, 0, 0))]

    def first(knobs: Knobs) -> str:
        return rank(evidence, ids, vectors, k=1, facts=facts, knobs=knobs)[0].paper_id

    assert first(Knobs(recency=1, popularity=0)) == "new-quiet"
    assert first(Knobs(recency=0, popularity=1)) == "old-popular"


def test_diversity_skips_a_near_duplicate_of_a_paper_already_picked():
    ids = ["a", "a-copy", "b"]
    vectors = np.stack([unit(1, 0.3, 0), unit(1, 0.3, 0.001), unit(1, -0.3, 0.2)])
    evidence = [Evidence("x", unit(1, 0, 0))]
    plain = rank(evidence, ids, vectors, k=2, knobs=Knobs(diversity=0))
    diverse = rank(evidence, ids, vectors, k=2, knobs=Knobs(diversity=1))
    assert {r.paper_id for r in plain} == {"a", "a-copy"}
    assert {r.paper_id for r in diverse} == {"a", "b"}


def test_the_whitened_space_needs_enough_papers_and_gives_unit_vectors():
    rng = np.random.default_rng(0)
    assert Space.fit(rng.normal(size=(10, 8))) is None
    sample = rng.normal(size=(200, 8)) * np.arange(1, 9) + 5
    space = Space.fit(sample)
    assert space is not None
    projected = space.apply(sample)
    assert np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    # Centred: the corpus mean no longer makes every pair of papers look alike.
    assert abs(float(np.mean(projected @ projected.T))) < 0.05


def test_min_score_gates_on_the_plain_cosine_even_in_a_whitened_space():
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(100, 4)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    space = Space.fit(corpus)
    ids = ["close", "far"]
    vectors = np.stack([unit(1, 0.1, 0, 0), unit(-1, 0, 0.2, 0)])
    top = rank([Evidence("x", unit(1, 0, 0, 0))], ids, vectors, k=2, space=space, min_score=0.5)
    assert [r.paper_id for r in top] == ["close"]


def test_an_interest_with_little_evidence_is_whitened_less():
    # The corpus varies widely along the first axis and little along the others, so whitening
    # magnifies the small axes. "same-side" shares the seed's side of the wide axis; "small-axes"
    # shares its small-axis coordinates but lies on the other side of the wide axis.
    rng = np.random.default_rng(3)
    corpus = rng.normal(size=(400, 4)) * np.array([3.0, 0.3, 0.3, 0.3])
    space = Space.fit(corpus.astype(np.float32))
    assert space is not None
    assert Space.shrinkage_for(1) > Space.shrinkage_for(5) > Space.shrinkage_for(200)
    assert space.rescale(space.shrinkage) is None
    seed = np.array([1.0, 0.3, 0.0, 0.0], np.float32)
    ids = ["same-side", "small-axes"]
    vectors = np.stack([[1.2, 0.0, 0.3, 0.0], [-0.2, 0.3, 0.0, 0.0]]).astype(np.float32)

    def best(pieces: int) -> str:
        evidence = [Evidence("x", seed, kind="saved", paper_id=f"s{i}") for i in range(pieces)]
        return rank(evidence, ids, vectors, k=1, space=space)[0].paper_id

    # One seed paper: almost only centred, the wide axis decides.
    assert best(1) == "same-side"
    # The same direction backed by 200 papers is trusted in every axis, the small ones included.
    assert best(200) == "small-axes"


def test_an_interest_with_little_evidence_scores_the_cosines_of_a_space_whitened_for_it():
    # rank() rescales the space fitted at WHITENING_SHRINKAGE to the shrinkage one seed paper
    # calls for; the cosines must be those of a space fitted at that shrinkage to begin with.
    rng = np.random.default_rng(7)
    corpus = (rng.normal(size=(300, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])).astype(
        np.float32
    )
    space = Space.fit(corpus)
    assert space is not None
    seed = corpus[0]
    ids = [f"p{i}" for i in range(1, 41)]
    papers = corpus[1:41] / np.linalg.norm(corpus[1:41], axis=1, keepdims=True)
    found = rank([Evidence("x", seed, kind="saved", paper_id="s")], ids, papers, k=40, space=space)
    own = Space.fit(corpus, shrinkage=Space.shrinkage_for(1))
    assert own is not None
    expected = own.apply(papers) @ own.apply(seed[None])[0]
    got = {r.paper_id: r.score for r in found}
    assert np.allclose([got[p] for p in ids], expected, atol=1e-5)
