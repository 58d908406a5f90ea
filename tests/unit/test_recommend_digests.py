"""recommend's digest ledger and scheduler, in memory: each digest due once, none missing, outcomes.

A frozen clock drives the scheduler; papers are stored in a real Qdrant Edge with the hashing
stand-in encoder; notify's reports arrive as DigestSent / DigestFailed through TestRedisBroker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from faststream.redis import RedisBroker, TestRedisBroker
from prometheus_client import CollectorRegistry

from paperwire_recommend.digest import Schedule
from paperwire_recommend.metrics import Metrics
from paperwire_recommend.scheduler import Scheduler
from paperwire_recommend.store import Interest, Store, Subscription, User
from paperwire_shared import streams
from paperwire_shared.events import DigestDue, DigestFailed, DigestSent
from paperwire_shared.vectors import QdrantEdgeStore, StoredPaper
from tests.fakes import HashingEncoder
from tests.support.recommend import recommend_app

MONDAY = datetime(2026, 11, 16, tzinfo=UTC)  # a week without arXiv holidays
LLM = Interest("LLM tuning", "low-rank adapters fine-tuning language models")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """``day`` 0 is Monday 16 November 2026."""
    return MONDAY + timedelta(days=day, hours=hour, minutes=minute)


@dataclass
class World:
    store: Store
    vectors: QdrantEdgeStore
    scheduler: Scheduler
    broker: RedisBroker
    due: list[DigestDue] = field(default_factory=list)
    encoder: HashingEncoder = field(default_factory=HashingEncoder)

    def add_paper(self, paper_id: str, title: str, embedded: datetime) -> None:
        [vector] = self.encoder.encode([title])
        payload = {
            "paper_id": paper_id,
            "title": title,
            "abstract": "",
            "authors": ["A. Author"],
            "url": f"https://arxiv.org/abs/{paper_id}",
            "embedded_at": embedded.timestamp(),
            "published_ts": embedded.timestamp(),
        }
        self.vectors.upsert([StoredPaper(paper_id, payload, vector)])

    def user(
        self,
        created: datetime,
        schedule: Schedule = Schedule(),  # noqa: B008 - frozen
        email: str = "ada@example.org",
        **changes: object,
    ) -> User:
        user = self.store.create_user(email, schedule.frequency, 10, [LLM], created)
        sub = Subscription(user.id, schedule, starts_at=created, **changes)  # type: ignore[arg-type]
        self.store.save_subscription(sub, created)
        return user

    async def tick(self, now: datetime) -> None:
        with time_machine.travel(now, tick=False):
            await self.scheduler.tick(now)

    def ledger(self, user: User) -> list[tuple[str, str, str | None]]:
        return [
            (r.digest_key.split("/")[1], r.state, r.reason)
            for r in reversed(self.store.deliveries(user.id))
        ]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    broker = RedisBroker()
    encoder = HashingEncoder()
    app = recommend_app(
        tmp_path, broker=broker, store=store, vectors=vectors, encoder=encoder, min_score=0.1
    )
    world = World(store, vectors, app.state.scheduler, broker, encoder=encoder)

    @broker.subscriber(stream=streams.DIGESTS_DUE)
    async def collect(event: DigestDue) -> None:
        world.due.append(event)

    async with TestRedisBroker(broker):
        yield world
    vectors.close()


async def test_a_scheduler_down_for_three_days_records_each_missed_digest_once(
    world: World,
) -> None:
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    user = world.user(at(0, 0))
    await world.tick(at(0, 6, 30))  # Monday's digest
    world.add_paper("2611.00002", "Adapters for fine-tuning language models", at(1, 1))
    world.add_paper("2611.00003", "Low-rank fine-tuning of large language models", at(2, 1))

    await world.tick(at(3, 12))  # down from Monday 06:30 until Thursday noon
    await world.tick(at(3, 12, 1))  # and ticking again changes nothing

    assert world.ledger(user) == [
        ("2026-11-16", "sending", None),
        ("2026-11-17", "sending", None),
        ("2026-11-18", "skipped", "no new papers close enough to your interests"),
        ("2026-11-19", "skipped", "no new papers close enough to your interests"),
    ]
    assert [d.digest_key.split("/")[1] for d in world.due] == ["2026-11-16", "2026-11-17"]
    # The catch-up digest keeps its own date, and carries what arrived while the scheduler was down.
    assert world.due[1].created_at == at(1, 6)
    assert {p.paper_id for p in world.due[1].papers} == {"2611.00002", "2611.00003"}
    sent = [p.paper_id for d in world.due for p in d.papers]
    assert len(sent) == len(set(sent)) == 3


async def test_weekend_and_paused_days_are_recorded_as_skipped_with_the_reason(
    world: World,
) -> None:
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    user = world.user(at(4, 0))  # Friday

    await world.tick(at(7, 7))  # Monday after

    assert world.ledger(user) == [
        ("2026-11-20", "sending", None),
        ("2026-11-21", "skipped", "arXiv announces no new papers on weekends"),
        ("2026-11-22", "skipped", "arXiv announces no new papers on weekends"),
        ("2026-11-23", "skipped", "no new papers"),
    ]
    paused = world.user(at(7, 8), Schedule(paused=True), email="grace@example.org")
    await world.tick(at(8, 7))
    assert world.ledger(paused) == [("2026-11-24", "skipped", "paused")]


async def test_a_user_who_asked_for_empty_digests_gets_one_saying_why(world: World) -> None:
    user = world.user(at(0, 0), Schedule(send_empty=True))

    await world.tick(at(0, 7))

    [digest] = world.due
    assert digest.papers == () and digest.empty_reason == "no new papers"
    assert world.ledger(user) == [("2026-11-16", "sending", None)]


@dataclass
class FlakyPublish:
    """Publishes into ``into``; ``crash_before`` / ``crash_after`` fail the next call(s)."""

    into: list[DigestDue]
    crash_before: int = 0
    crash_after: int = 0

    async def __call__(self, digest: DigestDue) -> None:
        if self.crash_before:
            self.crash_before -= 1
            raise ConnectionError("redis went away before the publish")
        self.into.append(digest)
        if self.crash_after:
            self.crash_after -= 1
            raise ConnectionError("redis went away after the publish")


def flaky_scheduler(world: World, publish: FlakyPublish) -> Scheduler:
    s = world.scheduler
    return Scheduler(s.settings, s.store, s.recommender, publish, Metrics(CollectorRegistry()))


@pytest.mark.parametrize("crash", ["crash_before", "crash_after"])
async def test_a_crash_around_the_publish_is_repaired_on_the_next_tick(
    world: World, crash: str
) -> None:
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    user = world.user(at(0, 0))
    published: list[DigestDue] = []
    world.scheduler = flaky_scheduler(world, FlakyPublish(published, **{crash: 1}))

    await world.tick(at(0, 7))
    assert world.ledger(user) == [("2026-11-16", "due", None)]  # recorded, papers reserved

    await world.tick(at(0, 8))

    assert world.ledger(user) == [("2026-11-16", "sending", None)]
    keys = [d.digest_key for d in published]
    # Before: published once. After: published again under the same key; notify sends it once.
    assert keys == [f"{user.id}/2026-11-16"] * (1 if crash == "crash_before" else 2)
    assert published[0].papers == published[-1].papers


async def test_notify_reports_update_the_ledger_and_a_retry_is_handed_over_when_due(
    world: World,
) -> None:
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    user = world.user(at(0, 0))
    await world.tick(at(0, 7))
    key = f"{user.id}/2026-11-16"

    failed = DigestFailed(
        digest_key=key,
        user_id=user.id,
        reason="retrying: SMTPDataError 451: try later",
        attempts=1,
        retry_at=at(0, 7, 10),
        failed_at=at(0, 7, 1),
    )
    await world.broker.publish(failed, stream=streams.DIGESTS_FAILED)
    assert world.ledger(user) == [("2026-11-16", "due", "retrying: SMTPDataError 451: try later")]

    await world.tick(at(0, 7, 5))  # before retry_at: not yet
    assert len(world.due) == 1
    await world.tick(at(0, 7, 11))
    assert [d.digest_key for d in world.due] == [key, key]
    assert world.ledger(user)[0][1] == "sending"

    # A stale report of the first attempt, arriving late, changes nothing.
    await world.broker.publish(failed, stream=streams.DIGESTS_FAILED)
    sent = DigestSent(
        digest_key=key, user_id=user.id, message_id="<m@paperwire>", sent_at=at(0, 7, 12)
    )
    await world.broker.publish(sent, stream=streams.DIGESTS_SENT)
    await world.broker.publish(failed, stream=streams.DIGESTS_FAILED)
    assert world.ledger(user) == [("2026-11-16", "sent", None)]


async def test_repeated_bounces_suppress_the_address_and_free_the_papers(world: World) -> None:
    user = world.user(at(0, 0))
    for day in range(3):
        world.add_paper(
            f"2611.0000{day}", f"Low-rank adapters for language models {day}", at(day, 1)
        )
        await world.tick(at(day, 7))
        bounce = DigestFailed(
            digest_key=world.due[-1].digest_key,
            user_id=user.id,
            reason="your mail server refused it: recipient refused (550)",
            bounced=True,
            failed_at=at(day, 7, 1),
        )
        await world.broker.publish(bounce, stream=streams.DIGESTS_FAILED)
        await world.broker.publish(bounce, stream=streams.DIGESTS_FAILED)  # a duplicate report

    sub = world.store.get_subscription(world.store.get_user(user.id), Schedule())  # type: ignore[arg-type]
    assert (sub.status, sub.bounces) == ("suppressed", 3)
    assert [state for _, state, _ in world.ledger(user)] == ["failed"] * 3
    assert world.store.excluded_papers(user.id) == frozenset()  # never read: may be sent later

    await world.tick(at(6, 7))
    assert len(world.due) == 3 and len(world.ledger(user)) == 3  # no more digests


async def test_a_delivery_after_a_bounce_resets_the_count(world: World) -> None:
    user = world.user(at(0, 0), bounces=2)
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    await world.tick(at(0, 7))

    sent = DigestSent(
        digest_key=world.due[0].digest_key, user_id=user.id, message_id="<m@p>", sent_at=at(0, 7)
    )
    await world.broker.publish(sent, stream=streams.DIGESTS_SENT)

    sub = world.store.get_subscription(world.store.get_user(user.id), Schedule())  # type: ignore[arg-type]
    assert (sub.status, sub.bounces) == ("active", 0)


async def test_changing_the_schedule_never_sends_a_second_digest_for_the_same_day(
    world: World,
) -> None:
    world.add_paper("2611.00001", "LoRA: low-rank adapters for language models", at(0, 1))
    user = world.user(at(0, 0), Schedule(send_hour=6))
    await world.tick(at(0, 6, 30))
    world.add_paper("2611.00002", "Adapters for fine-tuning language models", at(0, 7))
    sub = world.store.get_subscription(user, Schedule())
    world.store.save_subscription(
        Subscription(user.id, Schedule(send_hour=9), sub.starts_at), at(0, 8)
    )

    await world.tick(at(0, 9, 30))  # 09:00 today is a new slot time, but the same day's key

    assert [d.digest_key for d in world.due] == [f"{user.id}/2026-11-16"]
