"""The sources' one HTTP client: allowed hosts, https, spacing, retries, limits and safe XML."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise

import httpx2
import pytest

from paperwire_ingest.config import Settings
from paperwire_ingest.sources.http import (
    BadResponse,
    LocalLimiter,
    PoliteTransport,
    Refused,
    Unavailable,
    check_xml,
    polite_client,
    retry_after,
)
from tests.fixtures.sources.replay import FIXTURES, FakeClock, Replay, replay_sources

ATOM = {"content-type": "application/atom+xml; charset=UTF-8"}


def settings(**overrides: object) -> Settings:
    return Settings(redis_url="redis://unused", **overrides)


def client_over(
    inner: httpx2.BaseTransport,
    clock: FakeClock,
    *,
    max_bytes: int = 1_000_000,
    deadline: float = 60.0,
) -> httpx2.Client:
    """The polite client as the sources get it, over ``inner``, arXiv's hosts sharing a limiter."""
    arxiv = LocalLimiter(3.0, clock=clock, sleep=clock.sleep)
    hosts = ("export.arxiv.org", "rss.arxiv.org", "oaipmh.arxiv.org")
    transport = PoliteTransport(
        dict.fromkeys(hosts, arxiv),
        user_agent="paperwire-test",
        max_bytes=max_bytes,
        deadline_seconds=deadline,
        inner=inner,
        clock=clock,
    )
    return polite_client(transport, timeout=60)


class Script(httpx2.BaseTransport):
    """Answers with the given responses in turn, noting when each request came."""

    def __init__(self, clock: FakeClock, *answers: httpx2.Response) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.times: list[float] = []
        self.user_agents: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.times.append(self.clock())
        self.user_agents.append(request.headers["user-agent"])
        return self.answers.pop(0)


def ok(body: bytes = b"<feed/>") -> httpx2.Response:
    return httpx2.Response(200, headers=ATOM, content=body)


def test_every_arxiv_host_shares_one_limit_of_one_request_every_3_seconds() -> None:
    clock = FakeClock()
    script = Script(clock, ok(), ok(), ok(), ok())
    client = client_over(script, clock)

    for url in (
        "https://rss.arxiv.org/rss/cs.LG",
        "https://export.arxiv.org/api/query",
        "https://oaipmh.arxiv.org/oai",
        "https://rss.arxiv.org/rss/cs.CL",
    ):
        assert client.get(url).status_code == 200

    assert [later - earlier for earlier, later in pairwise(script.times)] == [
        3.0,
        3.0,
        3.0,
    ]
    # Ours, not the library's: arXiv sees who is asking.
    assert set(script.user_agents) == {"paperwire-test"}


def test_429_waits_as_long_as_retry_after_says_and_so_does_the_next_request() -> None:
    clock = FakeClock()
    too_many = httpx2.Response(429, headers={"retry-after": "7"}, content=b"slow down")
    script = Script(clock, too_many, ok(), ok())
    client = client_over(script, clock)

    assert client.get("https://export.arxiv.org/api/query").status_code == 200
    client.get("https://rss.arxiv.org/rss/cs.LG")

    assert [b - a for a, b in pairwise(script.times)] == [7.0, 3.0]


def test_503_without_retry_after_backs_off_doubling_then_reports_the_source_down() -> None:
    clock = FakeClock()
    script = Script(clock, *[httpx2.Response(503, content=b"busy") for _ in range(4)])
    client = client_over(script, clock)

    with pytest.raises(Unavailable, match="HTTP 503 after 4 tries"):
        client.get("https://export.arxiv.org/api/query")

    assert [b - a for a, b in pairwise(script.times)] == [10.0, 20.0, 40.0]


def test_a_retry_after_longer_than_a_run_should_wait_fails_the_run_at_once() -> None:
    clock = FakeClock()
    script = Script(clock, httpx2.Response(503, headers={"retry-after": "3600"}), ok())
    client = client_over(script, clock)

    with pytest.raises(Unavailable, match="Retry-After 3600 s"):
        client.get("https://oaipmh.arxiv.org/oai")
    client.get("https://oaipmh.arxiv.org/oai")  # the next run still waits the hour out

    assert len(script.times) == 2
    assert script.times[1] - script.times[0] == 3600.0


def test_retry_after_may_be_an_http_date() -> None:
    now = datetime(2026, 11, 25, 5, 0, 0, tzinfo=UTC)
    headers = httpx2.Headers({"retry-after": "Wed, 25 Nov 2026 05:00:42 GMT"})

    assert retry_after(headers, now) == 42.0
    assert retry_after(httpx2.Headers({"retry-after": "soon"}), now) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://export.arxiv.org/api/query", "https only"),
        ("https://example.org/feed", "not a configured source host"),
    ],
)
def test_a_request_off_the_allowed_hosts_or_without_tls_is_never_sent(
    url: str, reason: str
) -> None:
    clock = FakeClock()
    script = Script(clock, ok())

    with pytest.raises(Refused, match=reason):
        client_over(script, clock).get(url)
    assert script.times == []


def test_a_redirect_to_another_host_is_refused_and_not_followed() -> None:
    clock = FakeClock()
    replay = Replay("arxiv-rss-redirect-off-host", clock=clock)
    sources = replay_sources(settings(arxiv_categories=["cs.LG", "cs.CL"]), replay, clock)

    with pytest.raises(Refused, match="mirror.example.org"):
        sources.feed.announcement(["cs.LG", "cs.CL"], now=datetime.now(UTC))
    assert replay.requests == ["GET https://rss.arxiv.org/rss/cs.CL+cs.LG"]


def test_an_answer_over_the_size_limit_is_cut_off_even_when_it_comes_compressed() -> None:
    clock = FakeClock()
    bomb = gzip.compress(b"<feed>" + b" " * 5_000_000 + b"</feed>")
    script = Script(
        clock, httpx2.Response(200, headers={**ATOM, "content-encoding": "gzip"}, content=bomb)
    )

    with pytest.raises(BadResponse, match="over 100000 bytes"):
        client_over(script, clock, max_bytes=100_000).get("https://export.arxiv.org/api/query")
    assert len(bomb) < 100_000


class Trickle(httpx2.SyncByteStream):
    """A body that arrives in chunks, each a minute after the last."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(10):
            self.clock.now += 60
            yield b"<x/>"


def test_an_answer_that_trickles_in_past_the_deadline_is_abandoned() -> None:
    clock = FakeClock()
    script = Script(clock, httpx2.Response(200, headers=ATOM, stream=Trickle(clock)))

    with pytest.raises(Unavailable, match="took over 120"):
        client_over(script, clock, deadline=120.0).get("https://export.arxiv.org/api/query")


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("arxiv-rss/entity-bomb.xml", "entity declarations refused"),
        ("arxiv-rss/external-entity.xml", "entity declarations refused"),
        ("arxiv-rss/truncated.xml", "malformed or truncated"),
        ("arxiv-rss/malformed.xml", "malformed or truncated"),
    ],
)
def test_unsafe_or_broken_xml_is_refused_before_any_parser_sees_it(
    fixture: str, reason: str
) -> None:
    with pytest.raises(BadResponse, match=reason):
        check_xml((FIXTURES / fixture).read_bytes(), "rss.arxiv.org")


def test_well_formed_recorded_answers_pass_the_xml_check() -> None:
    for fixture in ("arxiv-rss/2026-11-25-cs.CL+cs.LG.xml", "arxiv-oai/2026-11-02-page1.xml"):
        check_xml((FIXTURES / fixture).read_bytes(), "arxiv.org")
