"""The delivery helper in memory: handlers declare their contract; errors reach unit tests."""

from __future__ import annotations

import pytest
from faststream.redis import RedisBroker, TestRedisBroker
from pydantic import BaseModel

from paperwire_shared import streams
from paperwire_shared.delivery import DeliveryPolicy, StreamConsumer

STREAM = "paperwire.test.events"


class Counted(BaseModel):
    n: int


def consumer(broker: RedisBroker) -> StreamConsumer:
    return StreamConsumer(broker, group="tests", consumer="unit")


def test_a_handler_without_an_event_model_is_refused_when_subscribed() -> None:
    with pytest.raises(TypeError, match="event model"):

        @consumer(RedisBroker()).handler(STREAM)
        async def untyped(event: dict) -> None: ...


@pytest.mark.parametrize(
    "policy",
    [
        {"max_deliveries": 0},
        {"max_records": 0},
        {"reclaim_after": 0},
    ],
)
def test_a_policy_that_could_never_deliver_is_refused(policy: dict) -> None:
    with pytest.raises(ValueError):
        DeliveryPolicy(**policy)


async def test_in_memory_a_failing_handler_raises_to_the_test_and_a_bad_entry_is_dead_lettered() -> (
    None
):
    broker = RedisBroker()
    dead: list[dict] = []

    @consumer(broker).handler(STREAM)
    async def on_counted(event: Counted) -> None:
        raise RuntimeError(f"failed on {event.n}")

    @broker.subscriber(stream=streams.DEAD_LETTERS)
    async def collect(letter: dict) -> None:
        dead.append(letter)

    async with TestRedisBroker(broker) as br:
        with pytest.raises(RuntimeError, match="failed on 1"):
            await br.publish(Counted(n=1), stream=STREAM)
        await br.publish({"n": "not a number"}, stream=STREAM)

    [letter] = dead
    assert letter["stream"] == STREAM and letter["entry"] == {"n": "not a number"}
    assert letter["deliveries"] == 1 and letter["error"].startswith("undecodable")
