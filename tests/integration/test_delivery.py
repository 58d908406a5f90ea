"""At-least-once delivery on a real server: takeover, delivery cap, dead letters, dependency waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from faststream.redis import RedisBroker
from pydantic import BaseModel

from paperwire_shared import streams
from paperwire_shared.deadletters import list_letters
from paperwire_shared.delivery import DeliveryPolicy, StreamConsumer

STREAM = "paperwire.test.events"
GROUP = "tests"
# Short enough for tests: a stopped consumer's entries are taken over after 0.3 s.
POLICY = DeliveryPolicy(reclaim_after=0.3, max_deliveries=3, recheck_after=0.05)


class Counted(BaseModel):
    n: int


@dataclass
class Harness:
    redis_url: str
    client: aioredis.Redis
    handled: list[int] = field(default_factory=list)

    def consumer(
        self, broker: RedisBroker, name: str = "alive", **kwargs: object
    ) -> StreamConsumer:
        return StreamConsumer(broker, group=GROUP, consumer=name, **{"policy": POLICY, **kwargs})

    async def publish(self, *numbers: int) -> list[bytes]:
        broker = RedisBroker(self.redis_url)
        async with broker:
            return [await broker.publish(Counted(n=n), stream=STREAM) for n in numbers]

    async def group(self) -> dict:
        [found] = await self.client.xinfo_groups(STREAM)
        return found

    async def settled(self, check: Callable[[], Awaitable[bool]]) -> None:
        # The deadline only turns a broken consumer into a failure instead of a hang.
        async with asyncio.timeout(20):
            while not await check():  # noqa: ASYNC110 - the state lives in Redis
                await asyncio.sleep(0.05)

    async def drained(self) -> bool:
        group = await self.group()
        return group["pending"] == 0 and group["lag"] == 0


@pytest.fixture
async def harness(redis_url: str) -> AsyncIterator[Harness]:
    client = aioredis.from_url(redis_url)
    await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    yield Harness(redis_url, client)
    await client.aclose()


async def test_entries_a_stopped_consumer_left_pending_are_handled_by_a_live_one(
    harness: Harness,
) -> None:
    await harness.publish(1, 2, 3, 4)
    # A consumer reads two entries and dies before acknowledging them.
    await harness.client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=2)

    broker = RedisBroker(harness.redis_url)

    @harness.consumer(broker).handler(STREAM)
    async def on_counted(event: Counted) -> None:
        harness.handled.append(event.n)

    async with broker:
        await broker.start()
        await harness.settled(harness.drained)

    assert sorted(harness.handled) == [1, 2, 3, 4]
    assert await list_letters(harness.client) == []


async def test_entry_failing_every_time_is_dead_lettered_with_its_error_and_count(
    harness: Harness,
) -> None:
    broker = RedisBroker(harness.redis_url)

    @harness.consumer(broker).handler(STREAM)
    async def on_counted(event: Counted) -> None:
        harness.handled.append(event.n)
        if event.n == 13:
            raise RuntimeError("13 is unlucky")

    async with broker:
        await broker.start()
        [_, poison, _] = await harness.publish(1, 13, 2)
        await harness.settled(harness.drained)

    [dead] = await list_letters(harness.client)
    assert dead.letter.stream == STREAM and dead.letter.group == GROUP
    assert dead.letter.entry_id == poison.decode()
    assert dead.letter.entry == {"n": 13}
    assert dead.letter.error == "RuntimeError: 13 is unlucky"
    assert dead.letter.deliveries == POLICY.max_deliveries
    assert sorted(harness.handled) == [1, 2, 13, 13, 13]


async def test_entries_that_cannot_be_decoded_are_dead_lettered_at_once(harness: Harness) -> None:
    broker = RedisBroker(harness.redis_url)

    @harness.consumer(broker).handler(STREAM)
    async def on_counted(event: Counted) -> None:
        harness.handled.append(event.n)

    garbage = [
        {"n": b"\xff\xfe not text"},  # written without FastStream, not even UTF-8
        {"__data__": b"not json"},
        {"__data__": b'{"n": "many"}'},
    ]
    async with broker:
        await broker.start()
        ids = [await harness.client.xadd(STREAM, fields) for fields in garbage]
        await harness.publish(7)
        await harness.settled(harness.drained)

    dead = await list_letters(harness.client)
    assert [d.letter.entry_id for d in dead] == [i.decode() for i in ids]
    assert all(d.letter.deliveries == 1 and "undecodable" in d.letter.error for d in dead)
    assert harness.handled == [7]


async def test_failure_while_a_dependency_is_down_waits_for_it_and_is_not_dead_lettered(
    harness: Harness,
) -> None:
    database = {"up": False}

    async def database_up() -> bool:
        return database["up"]

    broker = RedisBroker(harness.redis_url)
    # One failed delivery would dead-letter: only waiting for the dependency can save the entry.
    policy = DeliveryPolicy(reclaim_after=0.3, max_deliveries=1, recheck_after=0.05)
    consumer = harness.consumer(broker, policy=policy, dependencies={"database": database_up})

    @consumer.handler(STREAM)
    async def on_counted(event: Counted) -> None:
        if not database["up"]:
            raise ConnectionError("database unreachable")
        harness.handled.append(event.n)

    async with broker:
        await broker.start()
        await harness.publish(1, 2)
        await asyncio.sleep(1.0)  # three times reclaim_after: still nothing handled, nothing lost
        assert harness.handled == []
        assert (await harness.group())["pending"] >= 1
        database["up"] = True
        await harness.settled(harness.drained)

    assert sorted(harness.handled) == [1, 2]
    assert await list_letters(harness.client) == []


async def test_slow_handler_keeps_its_entries_and_each_is_handled_once(harness: Harness) -> None:
    broker = RedisBroker(harness.redis_url)
    consumer = harness.consumer(broker)
    # A second live consumer would take over anything idle longer than reclaim_after.
    rival = RedisBroker(harness.redis_url)

    @consumer.handler(STREAM, max_records=4)
    async def on_counted(event: Counted) -> None:
        await asyncio.sleep(POLICY.reclaim_after * 0.6)  # four of them: 2.4 x reclaim_after
        harness.handled.append(event.n)

    @harness.consumer(rival, name="rival").handler(STREAM, max_records=4)
    async def on_counted_by_rival(event: Counted) -> None:
        harness.handled.append(-event.n)

    await harness.publish(1, 2, 3, 4)
    async with broker:
        await broker.start()
        await asyncio.sleep(0.05)  # the first consumer reads all four in one read
        async with rival:
            await rival.start()
            await harness.settled(harness.drained)

    assert harness.handled == [1, 2, 3, 4]


async def test_entries_waiting_their_turn_in_a_long_read_are_not_taken_over(
    harness: Harness,
) -> None:
    broker = RedisBroker(harness.redis_url)
    rival = RedisBroker(harness.redis_url)

    # Each is quick, but twenty of them take six times reclaim_after.
    @harness.consumer(broker).handler(STREAM, max_records=20)
    async def on_counted(event: Counted) -> None:
        await asyncio.sleep(POLICY.reclaim_after * 0.3)
        harness.handled.append(event.n)

    @harness.consumer(rival, name="rival").handler(STREAM)
    async def on_counted_by_rival(event: Counted) -> None:
        harness.handled.append(-event.n)

    await harness.publish(*range(20))
    async with broker:
        await broker.start()
        await asyncio.sleep(0.05)  # the first consumer reads all twenty in one read
        async with rival:
            await rival.start()
            await harness.settled(harness.drained)

    assert harness.handled == list(range(20))


async def test_batch_handler_gets_the_decodable_entries_and_dead_letters_the_rest(
    harness: Harness,
) -> None:
    broker = RedisBroker(harness.redis_url)
    batches: list[list[int]] = []

    @harness.consumer(broker).handler(STREAM, max_records=10)
    async def on_batch(events: list[Counted]) -> None:
        batches.append([e.n for e in events])

    await harness.publish(1, 2)
    bad = await harness.client.xadd(STREAM, {"__data__": b'{"n": null}'})
    await harness.publish(3)
    async with broker:
        await broker.start()
        await harness.settled(harness.drained)

    assert sorted(n for batch in batches for n in batch) == [1, 2, 3]
    [dead] = await list_letters(harness.client)
    assert dead.letter.entry_id == bad.decode() and dead.letter.deliveries == 1


async def test_failed_request_is_acknowledged_not_retried(harness: Harness) -> None:
    broker = RedisBroker(harness.redis_url)
    calls: list[int] = []

    @harness.consumer(broker).requests(STREAM)
    async def on_request(event: Counted) -> Counted:
        calls.append(event.n)
        raise RuntimeError("cannot answer")

    async with broker:
        await broker.start()
        await harness.publish(1)
        await harness.settled(harness.drained)
        await asyncio.sleep(POLICY.reclaim_after * 2)

    assert calls == [1]
    assert (await harness.group())["pending"] == 0
    assert streams.DEAD_LETTERS not in [k.decode() for k in await harness.client.keys()]


class Busy(Exception):
    """Another worker holds this entry's work."""


async def test_not_now_answers_do_not_count_towards_the_cap(harness: Harness) -> None:
    broker = RedisBroker(harness.redis_url)
    # Popped from the end: busy twice the cap, then one real failure, then success.
    answers = ["fail"] + ["busy"] * (POLICY.max_deliveries * 2)

    @harness.consumer(broker).handler(STREAM, retry_later=(Busy,))
    async def on_counted(event: Counted) -> None:
        if answers:
            raise Busy() if answers.pop() == "busy" else RuntimeError("a real failure")
        harness.handled.append(event.n)

    async with broker:
        await broker.start()
        await harness.publish(1)
        await harness.settled(harness.drained)

    assert harness.handled == [1]
    assert await list_letters(harness.client) == []
