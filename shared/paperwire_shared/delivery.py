"""How every stream handler gets its entries: at least once, bounded, reclaimed, capped, dead-lettered.

FastStream 0.7.8 leaves these to us (STACK-NOTES.md): a failed entry stays pending until something
claims it, a subscriber with ``min_idle_time`` claims (XAUTOCLAIM, one entry per call) but never
reads new entries, there is no delivery cap and no dead-letter queue. So each handler gets, on the
same group and consumer name:

- a reader: XREADGROUP of new entries, at most ``max_records`` per read;
- a reclaimer: takes over entries left pending for ``reclaim_after`` (a crashed consumer's, or a
  failed attempt's) and runs the same handler on them.

While a consumer works, the entries it holds (in hand, and those of the same read waiting their
turn) are heartbeated (XCLAIM JUSTID, which resets the idle time without counting a delivery), so
a slow but live consumer never has its work taken over; only one that stopped (crash, kill -9,
lost network) does. A failure while a dependency is down
(Redis, Qdrant, the database, SMTP: the service's readiness checks) is not the entry's fault: the
consumer waits for the dependency, holding its entries, and runs the handler again, so an outage of
any length never dead-letters anything. A failure with every dependency up counts as a delivery;
after ``max_deliveries`` of them the entry goes to ``streams.DEAD_LETTERS`` with the error and
the count, and is acknowledged. An entry that cannot be decoded into the handler's contract goes
there at once: no retry can fix it.

Handlers must be idempotent: any entry may be handled again (a crash between the effect and the
XACK, a replay from the dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faststream import AckPolicy
from faststream.exceptions import RejectMessage
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisMessage
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ValidationError

from paperwire_shared import streams

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
Handler = Callable[[Any], Awaitable[Any]]

# Each readiness check gets this long; a check that does not answer counts as down.
CHECK_TIMEOUT_S = 3.0
# The longest error text kept in a dead letter (a traceback-free message is far shorter).
MAX_ERROR_CHARS = 2_000
_DATA_FIELD = b"__data__"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How a handler reads, when another consumer takes its work over, when to give up an entry."""

    # One read takes at most this many entries, so one consumer never swallows the backlog.
    max_records: int = streams.MAX_RECORDS
    # Seconds without a heartbeat after which a pending entry is taken over. Heartbeats come every
    # third of it, so only a stopped consumer loses its entries; the cost is how long a crashed
    # consumer's work waits.
    reclaim_after: float = 60.0
    # Failed deliveries (with every dependency up) before the entry is dead-lettered.
    max_deliveries: int = 5
    # While a dependency is down, how often to look again; when all are up, how long a good check
    # is trusted before the next message looks again.
    recheck_after: float = 1.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_deliveries < 1:
            raise ValueError("max_records and max_deliveries must be at least 1")
        if self.reclaim_after <= 0 or self.recheck_after <= 0:
            raise ValueError("reclaim_after and recheck_after must be positive")


class DeadLetter(BaseModel):
    """One entry of ``streams.DEAD_LETTERS``: what failed, where, why, and how many times."""

    stream: str
    group: str | None = None
    entry_id: str | None = None
    # The original entry as it was decoded (the event's JSON), or its text when it was not JSON.
    entry: Any = None
    error: str
    deliveries: int = 1
    dead_at: datetime


class StreamConsumer:
    """The consumer ``consumer`` of ``group``: subscribes handlers with at-least-once delivery.

    ``dependencies`` are the service's readiness checks (Redis is always one). ``registry`` gets the
    delivery metrics; give one consumer per registry.
    """

    def __init__(
        self,
        broker: RedisBroker,
        *,
        group: str,
        consumer: str,
        policy: DeliveryPolicy | None = None,
        dependencies: Mapping[str, Check] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.broker = broker
        self.group = group
        self.consumer = consumer
        self.policy = policy or DeliveryPolicy()
        self.dependencies: dict[str, Check] = {
            "redis": lambda: broker.ping(timeout=CHECK_TIMEOUT_S),
            **(dependencies or {}),
        }
        self.metrics = _Metrics(registry)
        self._healthy_at = float("-inf")
        # Entries pending under this consumer name that this process never received (a previous
        # process with the same name) have been idle longer than this process has lived: the
        # heartbeat leaves them to the reclaimer.
        self._born = time.monotonic()
        # Entries whose handler failed, left pending on purpose for the reclaimer: not heartbeated.
        self._released: dict[str, set[str]] = {}
        self._beats: dict[str, _Beat] = {}
        self._subscribers: list[Any] = []

    def handler(
        self,
        stream: str,
        *,
        max_records: int | None = None,
        retry_later: tuple[type[Exception], ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Subscribe the decorated handler to ``stream``: a reader and a reclaimer.

        The handler's first parameter is the contract: an event model (one entry per call) or a
        ``list`` of one (a batch of up to ``max_records`` entries). An exception in
        ``retry_later`` says "not now" rather than "failed" (another worker holds the work): the
        entry is handed over again later without counting towards ``max_deliveries``.
        """

        def subscribe(handler: Handler) -> Handler:
            event_type, batch = _contract(handler)
            route = _Route(stream, event_type, batch, handler, retry_later)
            reclaim_ms = int(self.policy.reclaim_after * 1000)
            for reclaimer in (False, True):
                source = StreamSub(
                    stream,
                    group=self.group,
                    consumer=self.consumer,
                    batch=batch,
                    # The reclaimer claims one entry per call (FastStream 0.7.8's XAUTOCLAIM).
                    max_records=max_records or self.policy.max_records,
                    min_idle_time=reclaim_ms if reclaimer else None,
                    # How long the reclaimer sleeps once no pending entry is idle enough.
                    polling_interval=min(max(reclaim_ms // 4, 100), 5_000) if reclaimer else None,
                    declare=False,  # ensure_groups made the group at 0; FastStream would use $
                )
                subscriber = self.broker.subscriber(stream=source, parser=_tolerant_parser)
                subscriber(self._receiver(route, reclaimer))
                self._subscribers.append(subscriber)
            return handler

        return subscribe

    def requests(
        self, stream: str, *, max_records: int | None = None
    ) -> Callable[[Handler], Handler]:
        """Subscribe a request/reply handler: each request is answered at most once.

        The requester waits a bounded time and reports the failure itself, so a request that
        failed is acknowledged, never retried or dead-lettered: nobody would read a late answer.
        """

        def subscribe(handler: Handler) -> Handler:
            source = StreamSub(
                stream,
                group=self.group,
                consumer=self.consumer,
                max_records=max_records or self.policy.max_records,
                declare=False,
            )
            self.broker.subscriber(stream=source, ack_policy=AckPolicy.ACK)(handler)
            return handler

        return subscribe

    def _receiver(self, route: _Route, reclaimer: bool) -> Callable[..., Awaitable[None]]:
        async def receive(body: Any, message: RedisMessage) -> None:
            await self._deliver(route, reclaimer, body, message)

        name = getattr(route.handler, "__name__", "handler")
        receive.__name__ = f"{name}_{'reclaimed' if reclaimer else 'read'}"
        return receive

    async def _deliver(self, route: _Route, reclaimer: bool, body: Any, message: Any) -> None:
        stream = route.stream
        items = list(body) if route.batch else [body]
        ids: list[str | None] = [_text(i) for i in message.raw_message.get("message_ids", [])]
        ids += [None] * (len(items) - len(ids))  # in memory (TestRedisBroker) entries have no id
        events, kept = [], []
        for entry_id, item in zip(ids, items, strict=True):
            try:
                events.append(_decode(route.event_type, item))
                kept.append((entry_id, item))
            except ValidationError as exc:
                first = exc.errors()[0]
                log.warning(
                    "dead-lettering entry %s of %s: not a %s (%s at %s)",
                    entry_id,
                    stream,
                    route.event_type.__name__,
                    first["msg"],
                    ".".join(map(str, first["loc"])) or "top level",
                )
                await self._dead_letter(stream, entry_id, item, f"undecodable: {exc}", 1, message)
        if not events:
            return
        if reclaimer:
            self.metrics.redeliveries.labels(stream).inc(len(events))
        held = [i for i, _ in kept if i is not None]
        released = self._released.setdefault(stream, set())
        released.difference_update(held)
        with self._heartbeat(stream, message):
            await self._wait_for_dependencies(stream)
            while True:
                try:
                    await route.handler(events if route.batch else events[0])
                    return
                except route.retry_later as exc:
                    log.info("%s on %s: handed over again later", type(exc).__name__, stream)
                    if reclaimer:
                        await self._uncount(stream, held, message)
                    released.update(held)
                    # Left pending without an error in the log: nothing went wrong.
                    raise RejectMessage() from exc
                except Exception as exc:
                    if down := await self._down():
                        log.warning(
                            "%s on %s failed while %s is down: waiting, then again",
                            type(exc).__name__,
                            stream,
                            ", ".join(down),
                        )
                        await self._wait_for_dependencies(stream, down)
                        continue
                    deliveries = await self._deliveries(stream, held, message) if reclaimer else 1
                    if deliveries < self.policy.max_deliveries:
                        released.update(held)
                        raise  # left pending: the reclaimer hands it over again
                    error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "dead-lettering %d entries of %s after %d failed deliveries (%s)",
                        len(kept),
                        stream,
                        deliveries,
                        type(exc).__name__,
                    )
                    for entry_id, item in kept:
                        await self._dead_letter(stream, entry_id, item, error, deliveries, message)
                    return

    async def _dead_letter(
        self,
        stream: str,
        entry_id: str | None,
        item: Any,
        error: str,
        deliveries: int,
        message: Any,
    ) -> None:
        letter = DeadLetter(
            stream=stream,
            group=self.group,
            entry_id=entry_id,
            entry=_as_json(item),
            error=error[:MAX_ERROR_CHARS],
            deliveries=deliveries,
            dead_at=datetime.now(UTC),
        )
        await self.broker.publish(letter.model_dump(mode="json"), stream=streams.DEAD_LETTERS)
        self.metrics.dead_letters.labels(stream).inc()
        if entry_id is not None:
            # Acknowledged now, not with the rest of its batch: a batch that fails later must not
            # bring this entry back, to be dead-lettered twice.
            await message.consumer.xack(stream, self.group, entry_id)

    async def _down(self) -> list[str]:
        """The dependencies that do not answer now."""
        names = list(self.dependencies)
        results = await asyncio.gather(*(_check(self.dependencies[n]) for n in names))
        down = [name for name, ok in zip(names, results, strict=True) if not ok]
        if not down:
            self._healthy_at = time.monotonic()
        return down

    async def _wait_for_dependencies(self, stream: str, down: list[str] | None = None) -> None:
        """Returns once every dependency answers.

        Without ``down`` (before a delivery) a good check younger than ``recheck_after`` is
        trusted: one round of checks a second at most, however fast the entries come.
        """
        if down is None:
            if time.monotonic() - self._healthy_at < self.policy.recheck_after:
                return
            down = await self._down()
        if not down:
            return
        log.warning("%s waits for %s to come back", stream, ", ".join(down))
        self.metrics.dependency_waits.labels(stream).inc()
        while down:
            await asyncio.sleep(self.policy.recheck_after)
            if not all(s.running for s in self._subscribers):
                # Stopping: waiting would only hold the shutdown up (FastStream waits 15 s for
                # handlers). The entries stay pending, for the next process to take over.
                raise RejectMessage()
            down = await self._down()
        log.info("%s: dependencies are back, resuming", stream)

    async def _deliveries(self, stream: str, ids: Sequence[str], message: Any) -> int:
        """How many times the entries were delivered (the most among them), from XPENDING."""
        counts = [1]
        for entry_id in ids:
            found = await message.consumer.xpending_range(
                stream, self.group, min=entry_id, max=entry_id, count=1
            )
            if found:
                counts.append(int(found[0]["times_delivered"]))
        return max(counts)

    async def _uncount(self, stream: str, ids: Sequence[str], message: Any) -> None:
        """Takes back the delivery the reclaimer counted (XCLAIM RETRYCOUNT)."""
        for entry_id in ids:
            count = await self._deliveries(stream, [entry_id], message)
            await message.consumer.xclaim(
                stream,
                self.group,
                self.consumer,
                0,
                [entry_id],
                retrycount=max(count - 1, 1),
                justid=True,
            )

    @contextlib.contextmanager
    def _heartbeat(self, stream: str, message: Any) -> Iterator[None]:
        """While entries of ``stream`` are being handled, keeps every one this process holds claimed.

        Not only the entries in hand: FastStream handles a read of ``max_records`` entries one by
        one, and those waiting their turn must not look abandoned either. So the beat is per
        stream, and goes on while deliveries follow each other, however short each one is.
        """
        client = message.consumer
        if not hasattr(client, "xclaim"):  # in memory (TestRedisBroker) there is nothing to claim
            yield
            return
        beat = self._beats.get(stream)
        if beat is None:
            beat = self._beats[stream] = _Beat(self, client, stream)
        beat.enter()
        try:
            yield
        finally:
            beat.exit()

    async def _claim_held(self, client: Any, stream: str) -> None:
        try:
            pending = await client.xpending_range(
                stream, self.group, min="-", max="+", count=10_000, consumername=self.consumer
            )
            lived_ms = (time.monotonic() - self._born) * 1000
            released = self._released.get(stream, set())
            ids = [_text(p["message_id"]) for p in pending]
            released.intersection_update(ids)  # forget the ones acknowledged or taken over
            held = [
                entry_id
                for entry_id, p in zip(ids, pending, strict=True)
                if p["time_since_delivered"] < lived_ms and entry_id not in released
            ]
            if held:
                # JUSTID: resets the idle time and does not count as a delivery.
                await client.xclaim(stream, self.group, self.consumer, 0, held, justid=True)
        except Exception as exc:  # Redis down: the entries stay ours, idle; nothing to do
            log.debug("heartbeat on %s failed: %s", stream, exc)


class _Beat:
    """The heartbeat of one stream: every third of ``reclaim_after`` while there is work.

    It stops after a beat that found nothing in hand and no delivery since the previous one.
    """

    def __init__(self, owner: StreamConsumer, client: Any, stream: str) -> None:
        self.owner, self.client, self.stream = owner, client, stream
        self.in_hand = 0
        self.busy = False  # a delivery started since the last beat
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def enter(self) -> None:
        self.in_hand += 1
        self.busy = True
        if self.timer is None:
            self._schedule()

    def exit(self) -> None:
        self.in_hand -= 1

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.owner.policy.reclaim_after / 3, self._beat)

    def _beat(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self.owner._claim_held(self.client, self.stream)
            )
        if self.in_hand or self.busy:
            self.busy = False
            self._schedule()
        else:
            self.timer = None


@dataclass(frozen=True)
class _Route:
    """One handler on one stream."""

    stream: str
    event_type: type[BaseModel]
    batch: bool
    handler: Handler
    retry_later: tuple[type[Exception], ...]


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.dead_letters = Counter(
            "paperwire_dead_lettered_total",
            "Entries sent to the dead-letter stream, by the stream they came from.",
            ["stream"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "paperwire_redeliveries_total",
            "Entries handled again after a failed attempt or a stopped consumer, by stream.",
            ["stream"],
            registry=registry,
        )
        self.dependency_waits = Counter(
            "paperwire_dependency_waits_total",
            "Times a consumer stopped to wait for a dependency (Redis, Qdrant, database, SMTP).",
            ["stream"],
            registry=registry,
        )


def _contract(handler: Handler) -> tuple[type[BaseModel], bool]:
    """The event model of the handler's first parameter, and whether it takes a list of them."""
    hints = typing.get_type_hints(handler)
    hints.pop("return", None)
    if not hints:
        raise TypeError(f"{handler!r} needs a typed first parameter: the event it handles")
    annotation = next(iter(hints.values()))
    batch = typing.get_origin(annotation) is list
    event_type = typing.get_args(annotation)[0] if batch else annotation
    if not (isinstance(event_type, type) and issubclass(event_type, BaseModel)):
        raise TypeError(f"{handler!r} must take an event model or a list of them")
    return event_type, batch


def _decode(event_type: type[BaseModel], item: Any) -> BaseModel:
    if isinstance(item, bytes | str):
        return event_type.model_validate_json(item)
    return event_type.model_validate(item)


def _as_json(item: Any) -> Any:
    if isinstance(item, bytes):
        return item.decode("utf-8", "backslashreplace")
    return item


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _check(check: Check) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S))
    except Exception:  # a dependency check reports, it never raises
        return False


def _readable(fields: dict[Any, Any]) -> dict[Any, Any]:
    """An entry written without FastStream (no ``__data__``), made JSON-safe for its parser."""
    if _DATA_FIELD in fields:
        return fields
    return {_text_lossless(k): _text_lossless(v) for k, v in fields.items()}


def _text_lossless(value: Any) -> Any:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


async def _tolerant_parser(raw: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    # FastStream's parser raises on an entry without ``__data__`` whose fields are not UTF-8, and
    # then never calls the handler: the entry would stay pending forever. Made readable, it
    # reaches the handler and is dead-lettered as undecodable.
    data = raw.get("data")
    if isinstance(data, dict):
        raw = {**raw, "data": _readable(data)}
    elif isinstance(data, list):
        raw = {**raw, "data": [_readable(fields) for fields in data]}
    return await original(raw)
