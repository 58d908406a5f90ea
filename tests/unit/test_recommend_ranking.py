"""recommend's pure parts: ranking by the best piece of evidence, and when digests are due."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, date, datetime

import numpy as np
import pytest

from paperwire_recommend import ranking
from paperwire_recommend.digest import Schedule, on_demand_key, period_key
from paperwire_recommend.ranking import Evidence, lexical_scores, rank, terms, words_of


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


PAPERS = ["lora", "gauss", "mixed", "other"]
VECTORS = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 0), unit(0, 0, 1)])


def test_two_unrelated_interests_both_get_their_papers_not_their_average():
    evidence = [Evidence("llm", unit(1, 0, 0)), Evidence("3d", unit(0, 1, 0))]
    top = rank(evidence, PAPERS, VECTORS, k=2)
    assert {r.paper_id for r in top} == {"lora", "gauss"}
    assert all(r.score == pytest.approx(1.0) for r in top)


def test_a_crowded_interest_cannot_fill_the_list_alone():
    papers = ["a1", "a2", "a3", "b1"]
    vectors = np.stack([unit(1, 0.01, 0), unit(1, 0.02, 0), unit(1, 0.03, 0), unit(0.3, 1, 0)])
    evidence = [Evidence("a", unit(1, 0, 0)), Evidence("b", unit(0, 1, 0))]
    top = rank(evidence, papers, vectors, k=2)
    assert {r.paper_id for r in top} == {"a1", "b1"}


def test_reason_names_the_evidence_that_earned_the_score():
    evidence = [Evidence("llm", unit(1, 0, 0)), Evidence("3d", unit(0, 1, 0), seed_title="3DGS")]
    reasons = {r.paper_id: r.reason for r in rank(evidence, PAPERS, VECTORS, k=4)}
    assert reasons["lora"] == 'matches your interest "llm"'
    assert reasons["gauss"] == 'close to your seed paper "3DGS" (interest "3d")'


def test_excluded_and_weak_papers_are_left_out():
    top = rank(
        [Evidence("llm", unit(1, 0, 0))],
        PAPERS,
        VECTORS,
        k=4,
        min_score=0.5,
        exclude=frozenset({"lora"}),
    )
    assert [r.paper_id for r in top] == ["mixed"]


def test_no_evidence_ranks_nothing():
    assert rank([], PAPERS, VECTORS, k=3) == []


def test_a_daily_digest_has_one_key_per_local_day():
    daily = Schedule(frequency="daily")
    assert period_key("u", daily, date(2026, 11, 27)) == "u/2026-11-27"
    assert period_key("u", daily, date(2026, 11, 27)) != period_key("u", daily, date(2026, 11, 28))


def test_a_weekly_digest_has_one_key_per_iso_week_and_off_has_none():
    weekly = Schedule(frequency="weekly")
    monday, sunday = date(2026, 11, 23), date(2026, 11, 29)
    assert period_key("u", weekly, monday) == period_key("u", weekly, sunday) == "u/2026-W48"
    with pytest.raises(ValueError):
        period_key("u", Schedule(frequency="off"), monday)


def test_on_demand_digests_get_distinct_keys():
    now = datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert on_demand_key("u", now) != on_demand_key("u", now.replace(microsecond=1))


def test_rare_words_of_an_interest_lift_the_papers_that_use_them():
    # Same meaning for the model, but only one paper says "LoRA": it wins, and the reason says why.
    evidence = [Evidence("peft", unit(1, 0, 0), text="LoRA adapters for language models")]
    texts = ["Scaling language models", "LoRA adapters for small language models", "Cats"]
    vectors = np.stack([unit(1, 0.1, 0), unit(1, 0.1, 0), unit(0, 0, 1)])
    top = rank(evidence, ["plain", "lora", "cats"], vectors, k=2, texts=texts)
    assert [r.paper_id for r in top] == ["lora", "plain"]
    assert top[0].reason == 'matches your interest "peft" (adapter, lora, language)'
    assert top[1].score < top[0].score


def test_terms_drop_stop_words_short_words_and_plurals():
    assert terms("The LoRA adapters of an LLM, via 3D") == {"lora", "adapter", "llm"}


@pytest.mark.parametrize(
    "text",
    [
        "LoRA adapters for language models",
        "A class of bias-free lenses, gas and bus models; classes of adapter",
        "Gaussian splats: splatting with 3D Gaussians is fast",
        "İstanbul's naïve café—résumé: ÉCOLE lenses, ﬁne-tuned LoRA_adapters (½ model²)",
    ],
)
@pytest.mark.parametrize("slots", [ranking._SLOTS, 1])  # 1: every wanted word shares a slot
def test_a_paper_uses_a_term_exactly_when_its_terms_hold_it(text, slots, monkeypatch):
    monkeypatch.setattr(ranking, "_SLOTS", slots)
    assert set(words_of(text).tolist()) == set(map(hash, re.findall("[a-z0-9]+", text.lower())))
    asked = "adapter class clas bias gas bus lens model splat gaussian language fast lora"
    _, [matched] = lexical_scores([Evidence("a", unit(1, 0, 0), text=asked)], [words_of(text)])
    assert matched is not None
    assert set(matched.of(0)) == terms(asked) & terms(text)


def test_a_word_sharing_a_wanted_words_table_slot_is_not_taken_for_it():
    slot = hash("lora") & (ranking._SLOTS - 1)
    other = next(f"x{i}" for i in itertools.count() if hash(f"x{i}") & (ranking._SLOTS - 1) == slot)
    asked = [Evidence("a", unit(1, 0, 0), text="lora")]
    _, [matched] = lexical_scores(asked, [words_of(f"{other} adapters"), words_of("lora")])
    assert matched is not None and matched.of(0) == [] and matched.of(1) == ["lora"]


def test_word_scores_are_the_idf_share_of_an_interests_terms_a_paper_holds():
    texts = [
        "LoRA adapters for language models",
        "A class of bias-free lenses, gas and bus models; classes of adapter",
        "Gaussian splats: splatting with 3D Gaussians is fast",
        "Cats",
    ]
    asked = "adapter class bias gas bus lens model splat gaussian language lora"
    evidence = [Evidence("a", unit(1, 0, 0), text=asked), Evidence("b", unit(0, 1, 0))]
    scores, matched = lexical_scores(evidence, [words_of(t) for t in texts])
    held = [terms(t) for t in texts]
    idf = {t: math.log(5 / (sum(t in h for h in held) + 1)) + 1e-6 for t in terms(asked)}
    for col, h in enumerate(held):
        expected = sum(idf[t] for t in terms(asked) & h) / sum(idf.values())
        assert scores[0, col] == pytest.approx(expected, rel=1e-6)
        # Rarest first, then by name.
        assert matched[0].of(col) == sorted(terms(asked) & h, key=lambda t: (-idf[t], t))
    assert matched[1] is None and not scores[1].any()


def test_a_word_index_finds_what_a_pass_over_the_texts_finds_in_any_selection_of_them():
    texts = [
        "LoRA adapters for language models",
        "A class of bias-free lenses, gas and bus models; classes of adapter",
        "Gaussian splats: splatting with 3D Gaussians is fast",
        "Cats",
        "",
        "language models of cats and lenses",
    ]
    docs = [words_of(t) for t in texts]
    index = ranking.WordIndex.of(docs)
    asked = "adapter class bias gas bus lens model splat gaussian language lora absent"
    evidence = [Evidence("a", unit(1, 0, 0), text=asked)]
    for picked in (list(range(len(texts))), [5, 0, 3], [2], []):
        picked_docs = [docs[i] for i in picked]
        scanned, [by_scan] = lexical_scores(evidence, picked_docs)
        looked_up, [by_index] = lexical_scores(evidence, picked_docs, index.select(picked))
        np.testing.assert_array_equal(looked_up, scanned)
        assert by_scan is not None and by_index is not None
        assert [by_index.of(c) for c in range(len(picked))] == [
            by_scan.of(c) for c in range(len(picked))
        ]
    for keyword in ("language models", "cats", "absent words"):
        assert np.array_equal(
            ranking._mentioning(docs, keyword, index), ranking._mentioning(docs, keyword)
        )


def test_the_words_cache_keeps_the_latest_texts_up_to_its_size(monkeypatch):
    monkeypatch.setattr(ranking, "WORDS_CACHED", 3)
    monkeypatch.setattr(ranking, "_WORDS", {})
    for i in range(5):
        assert set(words_of(f"text number {i}").tolist()) == set(
            map(hash, ["text", "number", str(i)])
        )
    assert list(ranking._WORDS) == ["text number 2", "text number 3", "text number 4"]


def test_co_saves_are_measured_against_the_corpus_where_a_ranking_is_given_its_scale():
    """The API ranks a bounded set that is mostly co-saved with the user's library: measured over
    it, being co-saved is ordinary; over the corpus (here: the 40 unrelated papers, most of them
    co-saved with nobody's library), as when every paper is ranked, it stands out."""
    rng = np.random.default_rng(0)
    dim = 16
    topic = np.eye(dim)[0]

    def near(cosine: float) -> np.ndarray:
        other = rng.standard_normal(dim)
        other -= (other @ topic) * topic
        return cosine * topic + math.sqrt(1 - cosine**2) * other / np.linalg.norm(other)

    # "closest": the most relevant; "co-saved": less relevant, a little more co-saved; 20 more of
    # the set, co-saved about as much; 40 reference papers, unrelated, one of them co-saved.
    relevance = [0.9, 0.8] + [0.6] * 20 + [0.0] * 40
    vectors = np.stack([near(c) for c in relevance]).astype(np.float32)
    collaborative = np.asarray([0.5, 0.6, *np.linspace(0.3, 0.55, 20), *[0.0] * 39, 0.3])
    ids = ["closest", "co-saved"] + [f"set{i}" for i in range(20)] + [f"ref{i}" for i in range(40)]
    corpus = collaborative[22:]
    evidence = [Evidence("topic", topic.astype(np.float32), seed_title="Topic")]

    def first(**kwargs: object) -> str:
        return rank(evidence, ids, vectors, k=1, collaborative=collaborative, **kwargs)[0].paper_id

    assert first() == "closest"
    assert first(collaborative_scale=(corpus.mean(), corpus.std())) == "co-saved"
