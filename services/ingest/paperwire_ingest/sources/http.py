"""The one HTTP client of the paper sources: allowed hosts, https, politeness, limits, safe XML.

``PoliteTransport`` sits under an ``httpx2.Client`` that our code and the libraries we use (the
``arxiv`` package, oaipmh-scythe) share, so every request obeys the same rules:

- https only, to the configured source hosts only, and no redirect to another host;
- one ``Limiter`` per host group: arXiv's hosts share one (one request at a time, 3 s apart,
  as arXiv's terms ask), across processes when it is the Redis one;
- 429, 502, 503 and 504 are retried after ``Retry-After`` (or a doubling back-off), and every
  later request to that group waits as long, not only the retry;
- bounded time (a deadline on the whole answer, not only per read) and size (counted after
  decompression, so a gzip bomb stops at the limit);
- an XML answer must parse with defusedxml, which refuses entity declarations, before any other
  parser sees it: a truncated page or an entity-expansion bomb fails the request instead.

Sync on purpose: the libraries are sync. Sources run in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx2
import redis
from defusedxml import ElementTree as SafeElementTree  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

# Worth another try after a pause; anything else is the answer.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Set by the transport after decoding, so they would describe bytes we no longer hold.
_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class SourceError(Exception):
    """A source could not be read now: the run fails, is reported, and is tried again later."""


class Refused(SourceError):
    """A request we do not send: not https, a host not configured, or a redirect elsewhere."""


class Unavailable(SourceError):
    """The source is down, too slow, or asks us to wait longer than one run should."""


class BadResponse(SourceError):
    """An answer we do not parse: too large, malformed or truncated, or with entity declarations."""


class Limiter(Protocol):
    def turn(self) -> contextlib.AbstractContextManager[None]:
        """Wait for the next slot, and hold the group's one connection until the block ends."""
        ...

    def hold(self, seconds: float) -> None:
        """Inside a turn: the next turn starts at least ``seconds`` after this one ends."""
        ...


class LocalLimiter:
    """One request at a time, ``interval`` seconds from the end of one to the start of the next."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._gap = interval

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            wait = self._next - self._clock()
            if wait > 0:
                self._sleep(wait)
            self._gap = self.interval
            try:
                yield
            finally:
                self._next = self._clock() + self._gap

    def hold(self, seconds: float) -> None:
        self._gap = max(self._gap, seconds)


# Release a turn only if it is still ours: keep the key for the gap, so the next one waits.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisLimiter:
    """The same rule across processes: the service and a backfill run from the CLI share it.

    The key exists while a request is in flight (a lease, in case the holder dies) and for the
    gap after it; a turn starts by creating it (SET NX), so at most one holder exists at a time.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        interval: float,
        *,
        lease_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self._client = client
        self._key = key
        self._lease_ms = int((lease_seconds + interval) * 1000)
        self._sleep = sleep
        self._release = client.register_script(_RELEASE)
        self._gap = interval

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        token = uuid.uuid4().hex
        while not self._client.set(self._key, token, nx=True, px=self._lease_ms):
            left_ms = self._client.pttl(self._key)
            if left_ms > 0:
                # While a request is in flight the key holds a whole lease; look again sooner.
                self._sleep(min(left_ms / 1000, self.interval))
        self._gap = self.interval
        try:
            yield
        finally:
            self._release(keys=[self._key], args=[token, max(1, int(self._gap * 1000))])

    def hold(self, seconds: float) -> None:
        self._gap = max(self._gap, seconds)


def retry_after(headers: httpx2.Headers, now: datetime | None = None) -> float | None:
    """Seconds asked for by ``Retry-After`` (delta seconds or an HTTP date); None if absent or bad."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_xml(body: bytes, where: str) -> None:
    """Raise ``BadResponse`` unless ``body`` is well-formed XML without entity declarations."""
    try:
        SafeElementTree.fromstring(body)
    except DefusedXmlException as exc:
        raise BadResponse(f"{where}: XML with entity declarations refused ({exc})") from None
    except SafeElementTree.ParseError as exc:
        raise BadResponse(f"{where}: malformed or truncated XML ({exc})") from None


class PoliteTransport(httpx2.BaseTransport):
    """Every rule of this module around an inner transport (the network, or recorded answers)."""

    def __init__(
        self,
        limiters: Mapping[str, Limiter],
        *,
        user_agent: str,
        max_bytes: int,
        deadline_seconds: float,
        inner: httpx2.BaseTransport | None = None,
        retries: int = 3,
        first_backoff: float = 10.0,
        max_wait: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiters = dict(limiters)
        self._user_agent = user_agent
        self._max_bytes = max_bytes
        self._deadline = deadline_seconds
        self._inner = inner or httpx2.HTTPTransport(retries=0)
        self._retries = retries
        self._first_backoff = first_backoff
        self._max_wait = max_wait
        self._clock = clock

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "https":
            raise Refused(f"{url}: sources are read over https only")
        limiter = self._limiters.get(url.host)
        if limiter is None:
            raise Refused(f"{url.host}: not a configured source host")
        # Ours, not a library's: the hosts should know who is asking.
        request.headers["user-agent"] = self._user_agent
        problem = ""
        for attempt in range(self._retries + 1):
            backoff = min(self._first_backoff * 2**attempt, self._max_wait)
            with limiter.turn():
                try:
                    status, headers, body = self._send(request)
                except httpx2.TransportError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    limiter.hold(backoff)
                else:
                    if status not in RETRY_STATUSES:
                        break
                    problem = f"HTTP {status}"
                    wait = retry_after(headers)
                    if wait is not None and wait > self._max_wait:
                        limiter.hold(wait)
                        raise Unavailable(f"{url.host}: {problem}, Retry-After {wait:.0f} s")
                    limiter.hold(backoff if wait is None else wait)
            log.warning("%s: %s (try %d of %d)", url.host, problem, attempt + 1, self._retries + 1)
        else:
            raise Unavailable(f"{url.host}: {problem} after {self._retries + 1} tries")
        if status in _REDIRECTS:
            self._check_redirect(request, headers)
        if "xml" in headers.get("content-type", "") or body.lstrip()[:5] == b"<?xml":
            check_xml(body, url.host)
        return httpx2.Response(status, headers=headers, content=body, request=request)

    def _send(self, request: httpx2.Request) -> tuple[int, httpx2.Headers, bytes]:
        deadline = self._clock() + self._deadline
        response = self._inner.handle_request(request)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise BadResponse(f"{request.url.host}: answer over {self._max_bytes} bytes")
                if self._clock() > deadline:
                    raise Unavailable(f"{request.url.host}: answer took over {self._deadline} s")
                chunks.append(chunk)
        except httpx2.DecodingError as exc:
            raise BadResponse(f"{request.url.host}: answer not decodable ({exc})") from None
        finally:
            response.close()
        headers = httpx2.Headers(
            [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_HEADERS]
        )
        return response.status_code, headers, b"".join(chunks)

    @staticmethod
    def _check_redirect(request: httpx2.Request, headers: httpx2.Headers) -> None:
        target = request.url.join(headers.get("location", ""))
        if target.scheme != "https" or target.host != request.url.host:
            raise Refused(f"{request.url.host}: redirect to {target} refused (another host)")

    def close(self) -> None:
        self._inner.close()


def polite_client(transport: PoliteTransport, *, timeout: float) -> httpx2.Client:
    """The client every source uses; redirects are followed only as the transport allows."""
    return httpx2.Client(
        transport=transport,
        follow_redirects=True,
        max_redirects=3,
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)),
    )
