"""The janitor trims only what every group is done with; `paperwire dlq` lists, replays and drops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis
from faststream.redis import RedisBroker

from paperwire.cli import main
from paperwire_shared import streams
from paperwire_shared.delivery import DeadLetter
from paperwire_shared.janitor import trim_streams

STREAM = streams.PAPERS_EMBEDDED


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def ids_left(client: aioredis.Redis, stream: str = STREAM) -> list[bytes]:
    return [entry_id for entry_id, _ in await client.xrange(stream)]


async def test_janitor_keeps_the_oldest_pending_entry_of_any_group_and_all_after_it(
    client: aioredis.Redis,
) -> None:
    await client.xgroup_create(STREAM, "fast", id="0", mkstream=True)
    await client.xgroup_create(STREAM, "slow", id="0")
    ids = [await client.xadd(STREAM, {"n": str(n)}) for n in range(6)]
    # "fast" read and acknowledged everything; "slow" read four and acknowledged the first two.
    await client.xreadgroup("fast", "f", {STREAM: ">"})
    await client.xack(STREAM, "fast", *ids)
    await client.xreadgroup("slow", "s", {STREAM: ">"}, count=4)
    await client.xack(STREAM, "slow", *ids[:2])

    assert await trim_streams(client, [STREAM]) == {STREAM: 2}
    assert await ids_left(client) == ids[2:]

    await client.xack(STREAM, "slow", *ids[2:4])  # nothing pending: unread entries still count
    await trim_streams(client, [STREAM])
    assert await ids_left(client) == ids[4:]


async def test_janitor_trims_everything_every_group_acknowledged(client: aioredis.Redis) -> None:
    await client.xgroup_create(STREAM, "only", id="0", mkstream=True)
    ids = [await client.xadd(STREAM, {"n": str(n)}) for n in range(3)]
    await client.xreadgroup("only", "c", {STREAM: ">"})
    await client.xack(STREAM, "only", *ids)

    await trim_streams(client, [STREAM])

    assert await ids_left(client) == []
    [group] = await client.xinfo_groups(STREAM)
    assert group["lag"] == 0  # Redis can still tell the backlog: nothing unread was removed


async def test_janitor_leaves_streams_no_group_reads(client: aioredis.Redis) -> None:
    await client.xadd(streams.DEAD_LETTERS, {"n": "1"})
    await client.xadd("paperwire.test.no-group", {"n": "1"})
    await client.xgroup_create(STREAM, "idle", id="0", mkstream=True)
    await client.xadd(STREAM, {"n": "1"})

    removed = await trim_streams(client, [STREAM, "paperwire.test.no-group", streams.DEAD_LETTERS])

    assert removed == {STREAM: 0}
    assert len(await ids_left(client, streams.DEAD_LETTERS)) == 1
    assert len(await ids_left(client)) == 1


def dead_letter(redis_url: str, n: int, stream: str = streams.FEEDBACK_RECORDED) -> None:
    letter = DeadLetter(
        stream=stream,
        group=streams.RECOMMEND_GROUP,
        entry_id=f"1-{n}",
        entry={"n": n},
        error=f"RuntimeError: failure {n}",
        deliveries=5,
        dead_at=datetime(2026, 11, 27, tzinfo=UTC),
    )

    async def publish() -> None:
        broker = RedisBroker(redis_url)
        async with broker:
            await broker.publish(letter.model_dump(mode="json"), stream=streams.DEAD_LETTERS)

    asyncio.run(publish())


def letter_ids(redis_url: str) -> list[str]:
    return [
        entry_id.decode() for entry_id, _ in redis.from_url(redis_url).xrange(streams.DEAD_LETTERS)
    ]


# The `paperwire` command runs its own event loop: these tests are synchronous.


def test_dlq_lists_and_shows_what_failed_and_why(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    dead_letter(redis_url, 1)
    dead_letter(redis_url, 2, stream=streams.PAPERS_EMBEDDED)

    main(["dlq", "list"])
    listed = capsys.readouterr().out.splitlines()
    main(["dlq", "list", "--stream", streams.PAPERS_EMBEDDED])
    only_embedded = capsys.readouterr().out.splitlines()

    assert len(listed) == 2 and "RuntimeError: failure 1" in listed[0]
    assert len(only_embedded) == 1 and streams.PAPERS_EMBEDDED in only_embedded[0]
    main(["dlq", "show", listed[0].split()[0]])
    shown = capsys.readouterr().out
    assert '"entry_id": "1-1"' in shown and '"deliveries": 5' in shown


def test_dlq_replay_puts_the_entry_back_on_its_stream_and_drop_deletes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    for n in (1, 2, 3):
        dead_letter(redis_url, n)
    first, second, third = letter_ids(redis_url)

    main(["dlq", "replay", first])
    main(["dlq", "drop", second])

    assert letter_ids(redis_url) == [third]
    [(_, fields)] = redis.from_url(redis_url).xrange(streams.FEEDBACK_RECORDED)
    # Replayed the way services publish: FastStream's envelope around the original entry.
    assert fields[b"__data__"].endswith(b'{"n":1}')

    with pytest.raises(SystemExit):
        main(["dlq", "replay"])  # neither ids nor --all: refused, nothing replayed
    main(["dlq", "drop", "--all"])
    assert letter_ids(redis_url) == []
