"""What the streams and consumer groups hold right now: for every service's /metrics and `paperwire status`.

Every stream service exports the whole topology (``streams.GROUPS`` and the dead-letter stream), not
only its own groups: a consumer that is down cannot report its own backlog, and that is exactly the
backlog an operator must see. Any one service alive is enough; dashboards and alerts aggregate
with ``max by (stream, group)``. One scrape costs two pipelined round trips to Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from paperwire_shared import streams

log = logging.getLogger(__name__)


def watched_streams() -> tuple[str, ...]:
    """Every stream some group reads, then the dead letters: read at call time, not import."""
    return tuple(dict.fromkeys([*streams.GROUPS, streams.DEAD_LETTERS]))


@dataclass(frozen=True)
class GroupStats:
    name: str
    consumers: int
    # Entries not yet delivered to any consumer of the group; None when Redis cannot tell
    # (after entries were deleted or trimmed past the group's position).
    lag: int | None
    # Entries delivered to a consumer and not acknowledged yet.
    pending: int
    # Seconds since the oldest pending entry was last delivered: a stuck entry grows this.
    oldest_pending_idle: float | None


@dataclass(frozen=True)
class StreamStats:
    stream: str
    length: int
    last_entry_at: datetime | None
    groups: tuple[GroupStats, ...]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_time(entry_id: Any) -> datetime | None:
    """The time in an auto-generated stream id (``<ms>-<seq>``); None for ``0-0``."""
    ms = int(_text(entry_id).split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


async def read_stream_stats(
    client: aioredis.Redis, names: Sequence[str] | None = None
) -> list[StreamStats]:
    """Length, last entry time and per-group lag/pending of each stream; a missing stream is empty."""
    names = list(names or watched_streams())
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.xinfo_stream(name)
        pipe.xinfo_groups(name)
    replies = await pipe.execute(raise_on_error=False)
    infos: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for index, name in enumerate(names):
        info, groups = replies[2 * index], replies[2 * index + 1]
        for reply in (info, groups):
            if isinstance(reply, Exception) and "no such key" not in str(reply).lower():
                raise reply
        infos[name] = (
            {} if isinstance(info, Exception) else info,
            [] if isinstance(groups, Exception) else groups,
        )

    # Second round trip: how long the oldest pending entry of each busy group has waited.
    busy = [(n, _text(g["name"])) for n, (_, gs) in infos.items() for g in gs if g["pending"]]
    idle: dict[tuple[str, str], float] = {}
    if busy:
        pipe = client.pipeline(transaction=False)
        for name, group in busy:
            pipe.xpending_range(name, group, min="-", max="+", count=1)
        for key, reply in zip(busy, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list) and reply:
                idle[key] = reply[0]["time_since_delivered"] / 1000

    found = []
    for name, (info, groups) in infos.items():
        last_id = info.get("last-generated-id")
        found.append(
            StreamStats(
                stream=name,
                length=int(info.get("length", 0)),
                last_entry_at=_id_time(last_id) if last_id is not None else None,
                groups=tuple(
                    GroupStats(
                        name=_text(g["name"]),
                        consumers=int(g["consumers"]),
                        lag=None if g.get("lag") is None else int(g["lag"]),
                        pending=int(g["pending"]),
                        oldest_pending_idle=idle.get((name, _text(g["name"]))),
                    )
                    for g in groups
                ),
            )
        )
    return found


class StreamStatsCollector(Collector):
    """Prometheus view of ``read_stream_stats``, refreshed by the /metrics route before rendering.

    The families are always exported (empty before the first refresh), so their names are known
    without a Redis server. ``redis_url=None`` never connects (an app under TestRedisBroker).
    """

    def __init__(self, redis_url: str | None) -> None:
        self._redis_url = redis_url
        self._client: aioredis.Redis | None = None
        self._stats: list[StreamStats] = []
        self._up = 0.0
        self._read_seconds = 0.0

    async def refresh(self) -> None:
        if self._redis_url is None:
            return
        if self._client is None:
            # Short timeouts: a scrape must answer (with redis_up 0) even when Redis does not.
            self._client = aioredis.from_url(
                self._redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        started = time.perf_counter()
        try:
            self._stats = await read_stream_stats(self._client)
            self._up = 1.0
        except (RedisError, OSError) as exc:
            log.warning("could not read stream stats: %s", exc)
            self._stats, self._up = [], 0.0
        self._read_seconds = time.perf_counter() - started

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self._stats)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: the registry asks when the collector is registered, to refuse clashes.
        return self._families([])

    def _families(self, stats: list[StreamStats]) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "paperwire_stream_stats_up",
            "1 when the last read of the streams' state from Redis succeeded.",
            value=self._up,
        )
        seconds = GaugeMetricFamily(
            "paperwire_stream_stats_read_seconds",
            "Time the last read of the streams' state took.",
            value=self._read_seconds,
        )
        length = GaugeMetricFamily(
            "paperwire_stream_length", "Entries in the stream (XLEN).", labels=["stream"]
        )
        last = GaugeMetricFamily(
            "paperwire_stream_last_entry_timestamp_seconds",
            "Unix time of the newest entry ever added to the stream.",
            labels=["stream"],
        )
        lag = GaugeMetricFamily(
            "paperwire_stream_group_lag",
            "Entries not yet delivered to the consumer group (absent when Redis cannot tell).",
            labels=["stream", "group"],
        )
        pending = GaugeMetricFamily(
            "paperwire_stream_group_pending",
            "Entries delivered to a consumer of the group and not acknowledged.",
            labels=["stream", "group"],
        )
        consumers = GaugeMetricFamily(
            "paperwire_stream_group_consumers",
            "Consumers registered in the group (dead ones stay until removed).",
            labels=["stream", "group"],
        )
        idle = GaugeMetricFamily(
            "paperwire_stream_group_oldest_pending_idle_seconds",
            "Seconds since the group's oldest pending entry was delivered; 0 when none is pending.",
            labels=["stream", "group"],
        )
        for s in stats:
            length.add_metric([s.stream], s.length)
            if s.last_entry_at is not None:
                last.add_metric([s.stream], s.last_entry_at.timestamp())
            for g in s.groups:
                labels = [s.stream, g.name]
                if g.lag is not None:
                    lag.add_metric(labels, g.lag)
                pending.add_metric(labels, g.pending)
                consumers.add_metric(labels, g.consumers)
                idle.add_metric(labels, g.oldest_pending_idle or 0.0)
        yield from (up, seconds, length, last, lag, pending, consumers, idle)
