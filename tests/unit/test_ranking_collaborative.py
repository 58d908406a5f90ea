"""Co-saves (collaborative.CoSaves): what readers of a user's papers also saved."""

from __future__ import annotations

import pytest

from paperwire_recommend.collaborative import CoSaves

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


def test_neighbours_leave_out_the_users_own_papers():
    cosaves = CoSaves(pairs())
    assert cosaves.neighbours(["mine"], 5) == ["often", "rare"]
    assert cosaves.neighbours(["never-saved"], 5) == []


def test_beta_discounts_papers_that_everyone_saves():
    # "often" is co-saved 3 times but saved by 3 readers; "rare" once, by 1 reader.
    flat = CoSaves(pairs(), beta=0.0).scores(["mine"], ["often", "rare"])
    penalised = CoSaves(pairs(), beta=1.0).scores(["mine"], ["often", "rare"])
    # 3 savers against 1: with beta 1 the ratio shrinks threefold.
    assert flat[0] / flat[1] == pytest.approx(3 * penalised[0] / penalised[1])


def test_the_same_save_twice_counts_once_and_no_saves_is_empty():
    assert len(CoSaves([("r", "p"), ("r", "p")])) == 1
    empty = CoSaves([])
    assert len(empty) == 0 and empty.scores(["p"], ["q"]).tolist() == [0.0]
