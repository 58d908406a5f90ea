"""notify end to end on a real Redis: DigestDue in, one email in the sink's outbox out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from faststream import TestApp

from paperwire.stack import free_port, read_outbox, smtp_sink_url, start_smtp_sink
from paperwire_notify.app import create_app
from paperwire_notify.config import Settings
from paperwire_notify.ledger import Ledger
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.streams import DIGESTS_DUE, NOTIFY_GROUP

KEY = "user-1:2026-11-27"


def digest() -> DigestDue:
    return DigestDue(
        digest_key=KEY,
        user_id="user-1",
        email="reader@example.org",
        papers=(
            RankedPaper(
                paper_id="p1",
                title="Sparse attention at scale",
                url="https://arxiv.org/abs/2611.00001",
                score=0.9,
                reason="close to your interest: efficient transformers",
            ),
        ),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )


async def group_state(redis_url: str) -> tuple[bytes, int]:
    """notify's group on the digest stream: the last entry it read and how many await an ack."""
    client = aioredis.from_url(redis_url)
    try:
        groups = await client.xinfo_groups(DIGESTS_DUE)
    finally:
        await client.aclose()
    group = next(g for g in groups if g["name"].decode() == NOTIFY_GROUP)
    return group["last-delivered-id"], group["pending"]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    # The deadline only turns a broken handler into a failure instead of a hang.
    async with asyncio.timeout(30):
        # Polling: the state lives in Redis and SQL, so there is no in-process event to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def delivery_state(database_url: str) -> str | None:
    ledger = Ledger(database_url)
    try:
        row = ledger.get(KEY)
    finally:
        ledger.close()
    return row.state if row else None


async def test_digest_published_twice_reaches_the_outbox_once(
    redis_url: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    sink = start_smtp_sink(outbox)
    settings = Settings(
        redis_url=redis_url, smtp_url=smtp_sink_url(sink), data_dir=tmp_path, consumer="it"
    )
    app = create_app(settings)
    try:
        async with TestApp(app):
            await app.broker.publish(digest(), stream=DIGESTS_DUE)
            last = await app.broker.publish(digest(), stream=DIGESTS_DUE)

            async def both_acked() -> bool:
                return await group_state(redis_url) == (last, 0)

            await eventually(both_acked)
    finally:
        sink.stop()

    [kept] = read_outbox(outbox)
    assert "Sparse attention at scale" in kept.message["Subject"]
    ledger = Ledger(settings.database_url)
    row = ledger.get(KEY)
    ledger.close()
    assert row is not None and row.state == "sent" and row.attempts == 1


async def test_digest_waits_while_the_mail_server_is_down_and_is_sent_once_it_is_back(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = Settings(
        redis_url=redis_url,
        smtp_url=f"smtp://127.0.0.1:{port}",  # nothing listens there yet
        data_dir=tmp_path,
        consumer="it",
        send_retry_delays=(),
    )
    app = create_app(settings)
    outbox = tmp_path / "outbox"
    sink = None
    try:
        async with TestApp(app):
            entry = await app.broker.publish(digest(), stream=DIGESTS_DUE)

            async def read_and_held() -> bool:
                return await group_state(redis_url) == (entry, 1)

            # notify holds the digest while its mail server is down: nothing lost, nothing failed.
            await eventually(read_and_held)
            assert await asyncio.to_thread(delivery_state, settings.database_url) is None

            sink = start_smtp_sink(outbox, port=port)

            async def acked() -> bool:
                return await group_state(redis_url) == (entry, 0)

            await eventually(acked)
    finally:
        if sink is not None:
            sink.stop()

    assert len(read_outbox(outbox)) == 1
    assert await asyncio.to_thread(delivery_state, settings.database_url) == "sent"
