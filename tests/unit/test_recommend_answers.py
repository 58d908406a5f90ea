"""A user's last recommendations are given again only while nothing they rest on has changed."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paperwire_recommend.config import Settings
from paperwire_recommend.ranking import Ranked
from paperwire_recommend.recommender import Answers, Recommendation, Recommender, _Answer
from paperwire_recommend.store import Interest, Store
from paperwire_shared.events import FeedbackRecorded
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder, LocalTextEncoder
from tests.support.recommend import stored_papers

TITLES = {
    "lora": "LoRA low-rank adapters for language models",
    "prefix": "Prefix tuning adapters for language models",
    "quant": "Quantised adapters for small language models",
    "splat": "Gaussian splatting of dynamic scenes",
}


class SearchCounting(QdrantEdgeStore):
    """The real Edge store, counting the vector searches a request makes."""

    searches = 0

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        return super().search(*args, **kwargs)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Recommender, SearchCounting, Store, HashingEncoder]]:
    encoder = HashingEncoder()
    vectors = SearchCounting(tmp_path / "qdrant")
    vectors.upsert(stored_papers(TITLES, encoder, at=time.time() - 3600))  # embedded an hour ago
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    settings = Settings(redis_url="redis://unused", data_dir=tmp_path)
    yield Recommender(settings, store, vectors, LocalTextEncoder(encoder)), vectors, store, encoder
    vectors.close()


def new_user(store: Store) -> Any:
    interest = Interest("adapters", text="adapters for language models")
    return store.create_user("a@example.org", "daily", 5, [interest], datetime.now(UTC))


async def test_the_same_question_again_is_answered_without_a_new_search(world):
    recommender, vectors, store, _ = world
    user = new_user(store)
    first = await recommender.recommend(user, 3)
    searches = vectors.searches
    again = await recommender.recommend(store.get_user(user.id), 3)
    assert [r.ranked.paper_id for r in again] == [r.ranked.paper_id for r in first]
    assert vectors.searches == searches
    await recommender.recommend(user, 2)  # another question
    assert vectors.searches == searches + 1


async def test_feedback_makes_the_next_answer_new(world):
    recommender, _, store, _ = world
    user = new_user(store)
    top = (await recommender.recommend(user, 3))[0].ranked.paper_id
    store.record_feedback(
        FeedbackRecorded(
            feedback_id="f1",
            user_id=user.id,
            paper_id=top,
            kind="dislike",
            recorded_at=datetime.now(UTC),
        )
    )
    after = await recommender.recommend(user, 3)
    assert top not in [r.ranked.paper_id for r in after]


async def test_a_paper_embedded_after_the_answer_makes_it_stale(world):
    recommender, vectors, store, encoder = world
    user = new_user(store)
    await recommender.recommend(user, 5)
    vectors.upsert(
        stored_papers({"new": "Adapters for language models, a new paper"}, encoder, time.time())
    )
    after = await recommender.recommend(user, 5)
    assert "new" in [r.ranked.paper_id for r in after]


async def test_an_edited_interest_makes_the_next_answer_new(world):
    recommender, _, store, _ = world
    user = new_user(store)
    before = await recommender.recommend(user, 1)
    user.interests = [Interest("splatting", text="gaussian splatting of scenes")]
    store.update_user(user, datetime.now(UTC))
    after = await recommender.recommend(store.get_user(user.id), 1)
    assert before[0].ranked.paper_id != "splat"
    assert after[0].ranked.paper_id == "splat"


def answer(key: tuple[Any, ...], at: float) -> _Answer:
    return _Answer.of(key, at, [])


def test_answers_expire_and_the_least_recently_asked_user_goes_first():
    answers = Answers(size=2, max_age=10)
    answers.put("a", answer((1,), 100.0))
    answers.put("b", answer((1,), 100.0))
    assert answers.get("a", (1,), 105.0) is not None  # "a" now asked most recently
    assert answers.get("a", (2,), 105.0) is None  # another key
    assert answers.get("a", (1,), 111.0) is None  # too old
    answers.put("c", answer((1,), 100.0))
    assert answers.get("b", (1,), 105.0) is None and len(answers) == 2
    off = Answers(size=0, max_age=10)
    off.put("a", answer((1,), 100.0))
    assert len(off) == 0


def test_kept_answers_leave_the_garbage_collector_nothing_to_walk():
    """Kept as objects, 2,000 users' answers were ~100k objects that each full collection walked
    in the middle of a request; kept pickled, once collected each is one object to walk (the
    named tuple itself: CPython stops tracking only plain tuples of plain values)."""

    def found(user: int) -> list[Recommendation]:  # fresh objects per answer, as requests make
        return [
            Recommendation(
                Ranked(f"{user}-{i}", 0.5, "close to your seed paper X", "adapters"),
                {
                    "title": f"Paper {i}",
                    "authors": ["A. Author", "B. Author"],
                    "categories": ["cs.LG"],
                },
            )
            for i in range(10)
        ]

    answers = Answers(size=1_000, max_age=10)
    gc.collect()
    before = len(gc.get_objects())
    for user in range(500):
        answers.put(f"user{user}", _Answer.of((10, None, user), 100.0, found(user)))
    gc.collect()
    assert len(gc.get_objects()) - before <= 510  # as objects: ~51 an answer, ~25,000
    kept = answers.get("user7", (10, None, 7), 105.0)
    assert kept is not None and kept.found == found(7)
