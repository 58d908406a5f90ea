"""The daily arXiv source against recorded answers: what is published, and how many requests it took."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import arxiv_daily
from paperwire_ingest.schedule import RunReport
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_ingest.sources.arxiv import Announcement, Listing, announced_papers, parse_feed
from paperwire_ingest.sources.http import BadResponse, SourceError, Unavailable
from paperwire_ingest.state import MemorySourceState
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED
from tests.fixtures.sources.replay import FakeClock, Replay, replay_sources

NOW = datetime(2026, 11, 25, 5, 31, tzinfo=UTC)
CATEGORIES = ["cs.LG", "cs.CL"]
RSS = "GET https://rss.arxiv.org/rss/cs.CL+cs.LG"


class Harness:
    """The daily source over recorded answers, publishing to an in-memory broker."""

    def __init__(self, broker: RedisBroker, published: list[PaperIngested]) -> None:
        self.broker = broker
        self.published = published
        self.clock = FakeClock()
        self.replay = Replay(clock=self.clock)
        settings = Settings(redis_url="redis://unused", arxiv_categories=CATEGORIES)
        self.sources = replay_sources(settings, self.replay, self.clock)
        self.seen = MemorySeenPapers()
        self.state = MemorySourceState()
        self.cursor = ""

    async def day(self, *cassettes: str, now: datetime = NOW) -> RunReport:
        for cassette in cassettes:
            self.replay.load(cassette)
        report = await arxiv_daily(
            self.sources,
            self.broker,
            self.seen,
            self.state,
            categories=CATEGORIES,
            cursor=self.cursor,
            now=now,
        )
        self.cursor = report.cursor
        return report


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    broker = RedisBroker()
    published: list[PaperIngested] = []

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        published.append(paper)

    async with TestRedisBroker(broker) as test_broker:
        h = Harness(test_broker, published)
        yield h
        h.sources.close()


async def test_a_normal_day_publishes_each_announced_paper_once_with_full_metadata(
    harness: Harness,
) -> None:
    report = await harness.day("arxiv-normal-day")

    assert [(p.paper_id, p.version) for p in harness.published] == [
        ("2611.18301", 1),
        ("2611.18302", 1),
        ("2611.17999", 1),
        ("2609.01234", 2),
        ("2610.04321", 3),
    ]
    first = harness.published[0]
    assert first.title == (
        r"Sparse Mixture-of-Experts Routing with $\mathcal{O}(\log n)$ Experts per Token"
    )
    assert first.abstract.startswith(r"We route each token to $\mathcal{O}(\log n)$ of $n$")
    assert first.authors == ("Ada Lovelace", "Alan Turing")
    assert first.categories == ("cs.LG", "cs.AI")
    assert first.published == date(2026, 11, 23)
    assert first.url == "https://arxiv.org/abs/2611.18301"
    assert {p.source for p in harness.published} == {"arxiv"}
    # One feed for both categories, one API call for all ids, 3 s apart.
    assert harness.replay.requests[0] == RSS
    assert len(harness.replay.requests) == 2
    assert harness.replay.times[1] - harness.replay.times[0] == 3.0
    assert (report.found, report.published, report.cursor) == (5, 5, "2026-11-25")
    assert report.detail == "2026-11-25: 2 cross, 2 new, 1 replace, 1 replace-cross"


async def test_a_title_with_line_breaks_and_a_bcc_header_becomes_one_harmless_line(
    harness: Harness,
) -> None:
    await harness.day("arxiv-normal-day")

    injected = next(p for p in harness.published if p.paper_id == "2611.18302")
    assert injected.title == "Prompt Injection in E-mail Agents Bcc: attacker@example.com"
    assert "\r" not in injected.abstract and "\n" not in injected.abstract


async def test_a_paper_listed_as_new_and_as_a_cross_list_is_one_paper(harness: Harness) -> None:
    await harness.day("arxiv-normal-day")

    assert [p.paper_id for p in harness.published].count("2611.18302") == 1


async def test_the_same_announcement_read_again_publishes_nothing(harness: Harness) -> None:
    await harness.day("arxiv-normal-day")
    harness.cursor = ""  # as if the cursor were lost: the seen memory still holds
    report = await harness.day("arxiv-normal-day")

    assert (report.found, report.published) == (5, 0)
    assert len(harness.published) == 5


@pytest.mark.parametrize("cassette", ["arxiv-holiday", "arxiv-weekend"])
async def test_an_empty_feed_on_a_holiday_or_weekend_publishes_nothing_and_asks_nothing_else(
    harness: Harness, cassette: str
) -> None:
    report = await harness.day(cassette)

    assert harness.published == []
    assert harness.replay.requests == [RSS]  # no API call for nothing
    assert report.found == 0
    assert "weekend or holiday" in report.detail


async def test_a_replacement_updates_the_paper_under_its_id_and_keeps_what_others_added(
    harness: Harness,
) -> None:
    await harness.day("arxiv-normal-day")
    # Hugging Face upvoted v1 in between: v2 must not erase that.
    v1 = next(p for p in harness.published if p.paper_id == "2611.18301")
    await harness.seen.claim([v1.model_copy(update={"popularity": 12})])
    await harness.day("arxiv-holiday")
    report = await harness.day("arxiv-replacement-day")

    v2 = [p for p in harness.published[5:] if p.paper_id == "2611.18301"]
    assert [(p.version, p.popularity) for p in v2] == [(2, 12)]
    assert v2[0].abstract.endswith("compute drops by 6x.")
    assert v2[0].published == date(2026, 11, 23)  # first submission: an update does not look new
    assert v2[0].content_hash != v1.content_hash
    assert (report.found, report.published, report.cursor) == (2, 2, "2026-11-27")
    # The holiday moved the cursor, so Friday needed no catch-up (no OAI-PMH request).
    assert not any("oaipmh" in r for r in harness.replay.requests)


async def test_429_with_retry_after_is_waited_out_and_the_day_goes_through(
    harness: Harness,
) -> None:
    await harness.day("arxiv-rss-429")

    assert len(harness.published) == 5
    assert harness.replay.requests[:2] == [RSS, RSS]
    assert len(harness.replay.requests) == 3
    assert harness.replay.times[1] - harness.replay.times[0] == 7.0


async def test_503_from_the_api_is_retried_after_retry_after(harness: Harness) -> None:
    await harness.day("arxiv-api-503")

    assert len(harness.published) == 5
    assert len(harness.replay.requests) == 3
    assert harness.replay.times[2] - harness.replay.times[1] == 5.0


async def test_an_api_that_stays_down_fails_the_run_and_publishes_nothing(
    harness: Harness,
) -> None:
    with pytest.raises(Unavailable, match="HTTP 503 after 4 tries"):
        await harness.day("arxiv-api-down")

    assert harness.published == []
    assert len(harness.replay.requests) == 5  # the feed, then four tries of the API
    assert harness.cursor == ""  # the next run reads this announcement again


async def test_the_api_s_empty_page_with_status_200_is_asked_again(harness: Harness) -> None:
    await harness.day("arxiv-api-empty-page")

    assert len(harness.published) == 5
    api_calls = [r for r in harness.replay.requests if "export.arxiv.org" in r]
    assert len(api_calls) == 2 and api_calls[0] == api_calls[1]
    assert harness.published[0].published == date(2026, 11, 23)  # the API's metadata


@pytest.mark.parametrize(
    ("cassette", "reason"),
    [
        ("arxiv-rss-truncated", "malformed or truncated XML"),
        ("arxiv-rss-malformed", "malformed or truncated XML"),
        ("arxiv-rss-entity-bomb", "entity declarations refused"),
        ("arxiv-rss-external-entity", "entity declarations refused"),
    ],
)
async def test_a_broken_or_hostile_feed_fails_the_run_without_publishing(
    harness: Harness, cassette: str, reason: str
) -> None:
    with pytest.raises(SourceError, match=reason):
        await harness.day(cassette)

    assert harness.published == []
    assert harness.replay.requests == [RSS]


def test_an_html_page_served_as_the_feed_is_not_taken_for_an_empty_day() -> None:
    with pytest.raises(BadResponse, match="not an RSS feed"):
        parse_feed(b"<html><body>Service Unavailable</body></html>", now=NOW)


def paper(paper_id: str, version: int, abstract: str) -> PaperIngested:
    return PaperIngested(
        paper_id=paper_id,
        source="arxiv",
        title="T",
        abstract=abstract,
        version=version,
        ingested_at=NOW,
    )


def test_the_feed_s_own_text_stands_in_when_the_api_lags_a_version_behind_or_lacks_a_paper() -> (
    None
):
    announcement = Announcement(
        date(2026, 11, 27),
        (
            Listing("2611.00001", 2, "replace", paper("2611.00001", 2, "feed v2")),
            Listing("2611.00002", 1, "new", paper("2611.00002", 1, "feed v1")),
            Listing("2611.00003", 1, "new", paper("2611.00003", 1, "feed")),
        ),
    )
    metadata = {
        "2611.00001": paper("2611.00001", 1, "api v1"),  # not yet updated
        "2611.00003": paper("2611.00003", 1, "api"),
    }

    papers = announced_papers(announcement, metadata)

    assert [(p.paper_id, p.abstract) for p in papers] == [
        ("2611.00001", "feed v2"),
        ("2611.00002", "feed v1"),
        ("2611.00003", "api"),
    ]


async def test_announcements_missed_while_stopped_are_caught_up_through_oai_pmh(
    harness: Harness,
) -> None:
    for cassette in ("oai-whole-range", "oai-no-records", "arxiv-cs.LG-2026-11-04"):
        harness.replay.load(cassette)

    # Stopped after Monday's feed: Tuesday's was never read, Wednesday's is today's.
    report = await arxiv_daily(
        harness.sources,
        harness.broker,
        harness.seen,
        harness.state,
        categories=["cs.LG"],
        cursor="2026-11-02",
        now=datetime(2026, 11, 4, 5, 31, tzinfo=UTC),
    )

    oai = [r for r in harness.replay.requests if "oaipmh" in r]
    assert len(oai) == 5  # Monday's three pages, Tuesday, and Wednesday (no records)
    assert len(harness.replay.requests) == 7  # then Wednesday's feed and one API call
    ids = [p.paper_id for p in harness.published]
    # Wednesday's feed repeats a paper the catch-up found: one paper, published once.
    assert ids.count("2611.00107") == 1
    assert ids[-1] == "2611.01001"
    assert (report.published, report.cursor) == (9, "2026-11-04")
    assert await harness.state.checkpoints() == []  # a finished catch-up leaves no checkpoint
