"""Trims each stream below the oldest entry any consumer group still needs, never above it.

Publishing with ``maxlen`` would delete entries still unread or unacknowledged (STACK-NOTES.md), and
Redis 7.0 has no ``XTRIM ... ACKED`` (8.2). So a janitor works it out: a group needs its oldest
pending entry (XPENDING's smallest id) and everything after its last-delivered id; the stream is
trimmed with ``XTRIM MINID`` to the smallest of those over all its groups. A stream no group reads
(the dead letters) is never trimmed: it is the operator's, see ``paperwire dlq``.

Safe to run from any number of processes at once: a group only ever moves forward, so a floor read
a moment ago is never above what the group needs now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from paperwire_shared import streams

log = logging.getLogger(__name__)

# Trimming is cheap and nothing waits on it: once a minute keeps streams small.
DEFAULT_INTERVAL_S = 60.0


def _parse(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: bytes | str) -> tuple[int, int]:
    ms, seq = _parse(entry_id)
    return ms, seq + 1


async def trim_floor(client: aioredis.Redis, stream: str) -> str | None:
    """The smallest id some group of ``stream`` still needs; None when no group reads it."""
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    needs = []
    for group in groups:
        if group["pending"]:
            summary = await client.xpending(stream, group["name"])
            needs.append(_parse(summary["min"]))
        else:
            needs.append(_after(group["last-delivered-id"]))
    if not needs:
        return None
    ms, seq = min(needs)
    return f"{ms}-{seq}"


async def trim_streams(
    client: aioredis.Redis, names: Iterable[str] | None = None
) -> dict[str, int]:
    """Trims each stream (default: every stream a group reads); entries removed per stream."""
    removed = {}
    for stream in names if names is not None else streams.GROUPS:
        floor = await trim_floor(client, stream)
        if floor is not None:
            removed[stream] = int(await client.xtrim(stream, minid=floor, approximate=False))
    return removed


async def run_janitor(redis_url: str, interval: float = DEFAULT_INTERVAL_S) -> None:
    """Trims every ``interval`` seconds until cancelled; a failed round is logged and retried."""
    client = aioredis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
    try:
        while True:
            try:
                removed = await trim_streams(client)
                if any(removed.values()):
                    log.info("trimmed acknowledged entries: %s", removed)
            except (RedisError, OSError) as exc:
                log.warning("stream trim failed, retrying in %.0f s: %s", interval, exc)
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
