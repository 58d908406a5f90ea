"""A service's log: FastStream's two lines per message only at debug level, failures always."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from paperwire_shared.service import service_broker

ACCESS_LOG = "faststream.access.redis"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


async def consume_one_good_and_one_bad(redis_url: str) -> list[tuple[int, str]]:
    broker = service_broker(redis_url, CollectorRegistry(), "test")
    handled: list[str] = []

    @broker.subscriber(channel="log-test")
    async def handle(text: str) -> None:
        handled.append(text)
        if text == "bad":
            raise ValueError("a bad message")

    records = Records()
    logging.getLogger(ACCESS_LOG).addHandler(records)
    try:
        async with broker:
            await broker.start()
            await broker.publish("good", channel="log-test")
            await broker.publish("bad", channel="log-test")
            for _ in range(100):
                if len(handled) == 2:
                    break
                await asyncio.sleep(0.05)
    finally:
        logging.getLogger(ACCESS_LOG).removeHandler(records)
    assert handled == ["good", "bad"]
    return records.lines


@pytest.mark.parametrize("verbose", [False, True])
async def test_messages_are_logged_only_when_verbose_and_failures_always(
    redis_url: str, verbose: bool
) -> None:
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # what `paperwire [-v]` sets
    try:
        lines = await consume_one_good_and_one_bad(redis_url)
    finally:
        root.setLevel(saved)
    said = [text for _, text in lines]
    assert ("Received" in said and "Processed" in said) is verbose, lines
    errors = [text for level, text in lines if level == logging.ERROR]
    assert errors == ["ValueError: a bad message"], lines
