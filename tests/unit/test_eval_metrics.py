"""`paperwire eval`: metrics checked by hand, the two protocols, the embedding cache, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from paperwire.cli import main
from paperwire_recommend import evaluation as ev
from paperwire_recommend import recommender
from tests.fakes import HashingEncoder

TOPICS = {
    "graphs": "graph neural network message passing node embedding",
    "vision": "image segmentation convolution pixel detection",
    "speech": "speech recognition acoustic audio transcription",
}


def test_recall_and_ndcg_match_hand_computed_values():
    ranked = [7, 3, 9, 1, 5]
    relevant = frozenset({3, 5, 8})
    # Recall@k: relevant found in the first k over all relevant.
    assert ev.recall_at(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert ev.recall_at(ranked, relevant, 5) == pytest.approx(2 / 3)
    # nDCG@5: hits at ranks 2 and 5 -> 1/log2(3) + 1/log2(6); ideal: ranks 1-3.
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ev.ndcg_at(ranked, relevant, 5) == pytest.approx(dcg / ideal)
    # nDCG@2 with one hit at rank 2 of two possible: (1/log2 3) / (1 + 1/log2 3).
    assert ev.ndcg_at(ranked, relevant, 2) == pytest.approx((1 / math.log2(3)) / ideal_at(2))
    assert ev.ndcg_at([3, 5, 8], relevant, 10) == pytest.approx(1.0)
    assert ev.recall_at([1, 2], frozenset(), 10) == 0.0


def ideal_at(k: int) -> float:
    return sum(1 / math.log2(i + 2) for i in range(k))


def test_top_k_is_best_first_with_ties_by_index():
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0])
    assert ev.top_k(scores, 3).tolist() == [1, 3, 2]
    assert ev.top_k(scores, 10).tolist() == [1, 3, 2, 0, 4]


def write_dataset(folder: Path) -> Path:
    """Three topics of 12 papers; 15 users, each saving 11 papers of one topic (one reader also
    disliking a paper, one saving only 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    papers, rows = [], ["user_id,paper_id,rating"]
    for t, (topic, words) in enumerate(TOPICS.items()):
        vocab = words.split()
        for i in range(12):
            title = f"{vocab[i % 5]} {vocab[(i + 1) % 5]} {vocab[(i + 3) % 5]} {topic} study {i}"
            papers.append({"id": f"{topic}-{i}", "title": title, "abstract": ""})
        for u in range(5):
            user = f"u{t}{u}"
            for i in range(11):
                rows.append(f"{user},{topic}-{(i + u) % 12},1")
    rows.append("u00,vision-1,-1")
    rows += [f"small,speech-{i}," for i in range(5)]
    (folder / "papers.jsonl").write_text("\n".join(json.dumps(p) for p in papers) + "\n")
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_dataset_loads_saves_dislikes_and_drops_unknown_papers(tmp_path):
    folder = write_dataset(tmp_path / "d")
    with (folder / "interactions.csv").open("a") as f:
        f.write("u00,no-such-paper,1\n")
    data = ev.load_dataset(folder)
    assert len(data.papers) == 36
    assert len(data.libraries["u00"]) == 11
    assert [data.papers[i].id for i in data.dislikes["u00"]] == ["vision-1"]
    with pytest.raises(ev.EvalError):
        ev.load_dataset(tmp_path / "missing")


def test_warm_holds_out_a_fifth_of_each_library_of_ten_or_more(tmp_path):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    split = ev.split(data, "warm", None, seed=0)
    assert {c.user for c in split.cases} == set(data.libraries) - {"small"}
    for case in split.cases:
        library = set(data.libraries[case.user])
        assert len(case.held_out) == round(0.2 * len(library))
        assert set(case.train.tolist()) | case.held_out == library
        assert not set(case.train.tolist()) & case.held_out
        candidates = set(ev.candidates_of(split, case, len(data.papers)).tolist())
        assert case.held_out <= candidates and not candidates & set(case.train.tolist())


def test_cold_holds_out_papers_with_every_save_and_ranks_only_them(tmp_path):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    split = ev.split(data, "cold", None, seed=0)
    hidden = split.hidden_papers
    assert len(hidden) == round(0.2 * len(data.papers))
    assert set(split.candidates.tolist()) == hidden
    assert all(not set(lib.tolist()) & hidden for lib in split.visible.values())
    assert split.cases and all(c.held_out and c.held_out <= hidden for c in split.cases)


def test_a_cut_library_keeps_n_of_each_evaluated_users_papers_and_drops_the_rest(tmp_path):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    whole = ev.split(data, "warm", None, seed=0)
    cut = ev.cut_libraries(whole, 3, seed=0)
    assert [c.user for c in cut.cases] == [c.user for c in whole.cases]
    for before, after in zip(whole.cases, cut.cases, strict=True):
        assert len(after.train) == 3 and set(after.train.tolist()) <= set(before.train.tolist())
        assert after.held_out == before.held_out
        # The dropped papers are no longer the user's saves, for co-saves either.
        assert set(cut.visible[after.user].tolist()) == set(after.train.tolist())
    assert len(cut.visible["small"]) == len(whole.visible["small"])  # not evaluated: untouched


def test_an_oracle_scores_one_and_paperwire_finds_the_users_topic(tmp_path):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    vectors = HashingEncoder(dim=256).encode([p.text for p in data.papers])

    class Oracle:
        name = "oracle"

        def fit(self, ctx):
            pass

        def ranked(self, case, candidates, k):
            return np.asarray(sorted(candidates, key=lambda p: p not in case.held_out)[:k])

    report = ev.evaluate(data, vectors, "warm", methods=[Oracle(), ev.Paperwire()])
    assert report["methods"]["oracle"] == {"recall@10": 1.0, "recall@50": 1.0, "ndcg@10": 1.0}
    # Every held-out paper is of the user's topic, and 12 papers per topic fit in 50.
    assert report["methods"]["paperwire"]["recall@50"] == 1.0


def test_embeddings_are_encoded_once_and_then_read_from_the_cache(tmp_path):
    encoder = HashingEncoder()
    first = ev.EmbeddingCache(tmp_path, encoder).vectors(["a b", "c d", "a b"])
    again = ev.EmbeddingCache(tmp_path, encoder).vectors(["c d", "a b"])
    assert encoder.calls == [2]
    assert np.allclose(first[1], again[0]) and np.allclose(first[0], first[2])


def cached_dataset(tmp_path, monkeypatch) -> tuple[Path, ev.Dataset]:
    """The test dataset with every text already in the embedding cache under the default model's
    name, so ``paperwire eval`` never loads the real model."""
    folder = write_dataset(tmp_path / "d")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBED_MODEL", raising=False)
    hashing = HashingEncoder(dim=64)
    hashing.name = "all-MiniLM-L6-v2"
    data = ev.load_dataset(folder)
    ev.paper_vectors(data, ev.EmbeddingCache(ev.default_cache_dir(), hashing))
    return folder, data


def test_eval_json_has_every_method_with_the_three_metrics(tmp_path, monkeypatch, capsys):
    folder, _ = cached_dataset(tmp_path, monkeypatch)

    main(["eval", "--data", str(folder), "--protocol", "cold", "--users", "4", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "cold" and report["users"] == 4
    assert set(report) == {"protocol", "users", "methods"}
    assert set(report["methods"]) == {
        "paperwire",
        "most-saved",
        "arxiv-sanity-lite",
        "zotero-arxiv-daily",
        "centroid",
        "scholar-inbox",
    }
    for metrics in report["methods"].values():
        assert set(metrics) == {"recall@10", "recall@50", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_eval_library_cuts_the_evaluated_libraries_and_refuses_zero(tmp_path, monkeypatch, capsys):
    folder, data = cached_dataset(tmp_path, monkeypatch)
    whole_cases = ev.split(data, "warm", None, seed=0).cases

    main(["eval", "--data", str(folder), "--library", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["users"] == len(whole_cases)
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--data", str(folder), "--library", "0"])
    assert exited.value.code == 2
    assert "--library needs a positive number" in capsys.readouterr().err


def test_content_only_paperwire_learns_nothing_from_other_users(tmp_path):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    vectors = HashingEncoder(dim=256).encode([p.text for p in data.papers])
    ctx = ev.Context(data, ev.split(data, "cold", None, 0), vectors)
    with_others, alone = ev.Paperwire(), ev.Paperwire(content_only=True)
    with_others.fit(ctx)
    alone.fit(ctx)
    assert len(with_others.cosaves) > 0 and len(alone.cosaves) == 0
    case = ctx.split.cases[0]
    candidates = ctx.split.candidates
    assert len(alone.ranked(case, candidates, 5)) == min(5, len(candidates))


def test_api_paperwire_ranks_only_what_the_apis_searches_and_co_saves_find(tmp_path, monkeypatch):
    data = ev.load_dataset(write_dataset(tmp_path / "d"))
    vectors = HashingEncoder(dim=256).encode([p.text for p in data.papers])
    ctx = ev.Context(data, ev.split(data, "warm", None, 0), vectors)
    api = ev.Paperwire(api=True)
    api.fit(ctx)
    case = ctx.split.cases[0]
    pool = ev.candidates_of(ctx.split, case, len(data.papers))
    library = [api.ids[i] for i in case.train]
    mean = vectors[case.train].mean(axis=0)
    by_closeness = pool[np.argsort(-(vectors[pool] @ (mean / np.linalg.norm(mean))))]
    co_saved = {api.index[p] for p in api.cosaves.neighbours(library, 200)} & set(pool.tolist())
    assert co_saved

    # k=1: the search asks for max(10 x k, API_CANDIDATES_PER_INTEREST) papers; 10 here.
    monkeypatch.setattr(recommender, "API_CANDIDATES_PER_INTEREST", 3)
    found, scale_only = api._api_candidates(case, pool, 1, library, frozenset())
    assert set(found.tolist()) == set(by_closeness[:10].tolist()) | co_saved
    assert set(scale_only.tolist()) == set(api.reference.tolist()) - set(found.tolist())
    for k in (1, 2):  # the search asks for 10 x k papers
        monkeypatch.setattr(recommender, "API_COSAVED_CANDIDATES", 0)
        shown = api.ranked(case, pool, k).tolist()
        assert len(shown) == k and set(shown) <= set(by_closeness[: 10 * k].tolist())


def test_eval_api_adds_the_api_row_and_its_gain(tmp_path, monkeypatch, capsys):
    folder, _ = cached_dataset(tmp_path, monkeypatch)

    main(["eval", "--data", str(folder), "--protocol", "warm", "--api"])
    out = capsys.readouterr().out
    assert "paperwire (API)" in out and "API vs best peer" in out
