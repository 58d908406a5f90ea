"""Hugging Face daily papers against recorded answers: new papers, and upvotes as popularity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import Sources, arxiv_daily, hf_daily
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_ingest.sources.hf import parse_daily_papers
from paperwire_ingest.sources.http import BadResponse
from paperwire_ingest.state import MemorySourceState
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED
from tests.fixtures.sources.replay import FIXTURES, FakeClock, Replay, replay_sources

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = date(2026, 11, 25)
HF = "GET https://huggingface.co/api/daily_papers?date=2026-11-25&limit=100&p=0"


class Stream:
    def __init__(self, broker: RedisBroker, papers: list[PaperIngested]) -> None:
        self.broker = broker
        self.papers = papers
        self.clock = FakeClock()
        self.replay = Replay(clock=self.clock)
        settings = Settings(redis_url="redis://unused", arxiv_categories=["cs.LG", "cs.CL"])
        self.sources: Sources = replay_sources(settings, self.replay, self.clock)
        self.seen = MemorySeenPapers()

    async def hf(self, cassette: str) -> tuple[int, int]:
        self.replay.load(cassette)
        report = await hf_daily(self.sources, self.broker, self.seen, days=[DAY], now=NOW)
        return report.found, report.published


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    broker = RedisBroker()
    papers: list[PaperIngested] = []

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        papers.append(paper)

    async with TestRedisBroker(broker) as test_broker:
        s = Stream(test_broker, papers)
        yield s
        s.sources.close()


async def test_daily_papers_are_published_as_arxiv_papers_with_their_upvotes(
    stream: Stream,
) -> None:
    found, published = await stream.hf("hf-morning")

    assert (found, published) == (2, 2)
    assert [(p.paper_id, p.popularity, p.source) for p in stream.papers] == [
        ("2611.18301", 12, "hf-daily"),
        ("2611.18500", 5, "hf-daily"),
    ]
    video = stream.papers[1]
    # The arXiv API's metadata, not HF's copy (its title had a line break, its categories none).
    assert video.title == "Video World Models from Ten Minutes of Play"
    assert video.categories == ("cs.CV", "cs.LG")
    assert stream.replay.requests[0] == HF
    assert len(stream.replay.requests) == 2  # the listing, then one API call for both ids


async def test_changed_upvotes_are_published_again_with_the_same_text(stream: Stream) -> None:
    await stream.hf("hf-morning")
    found, published = await stream.hf("hf-evening")

    assert (found, published) == (2, 1)
    morning, evening = stream.papers[0], stream.papers[2]
    assert (evening.paper_id, evening.popularity) == ("2611.18301", 30)
    # Same text, same hash: embed reuses the vector and only rewrites the stored paper.
    assert evening.content_hash == morning.content_hash


async def test_a_paper_found_by_arxiv_and_by_hf_is_one_paper_with_one_text(
    stream: Stream,
) -> None:
    stream.replay.load("arxiv-normal-day")
    await arxiv_daily(
        stream.sources,
        stream.broker,
        stream.seen,
        MemorySourceState(),
        categories=["cs.LG", "cs.CL"],
        cursor="",
        now=NOW,
    )
    from_arxiv = next(p for p in stream.papers if p.paper_id == "2611.18301")
    before = len(stream.papers)

    await stream.hf("hf-morning")

    from_hf = [p for p in stream.papers[before:] if p.paper_id == "2611.18301"]
    # Published again only because it gained upvotes, with the very text arXiv gave.
    assert [(p.popularity, p.content_hash) for p in from_hf] == [(12, from_arxiv.content_hash)]
    assert stream.seen.seen["2611.18301"] == (1, from_arxiv.content_hash)


def test_an_item_without_an_arxiv_id_is_skipped_and_a_non_json_answer_refused() -> None:
    listing = parse_daily_papers((FIXTURES / "hf/2026-11-25-morning.json").read_bytes(), now=NOW)

    assert [item.paper_id for item in listing] == ["2611.18301", "2611.18500"]
    assert listing[1].paper is not None and listing[1].paper.popularity == 5
    with pytest.raises(BadResponse, match="not JSON"):
        parse_daily_papers((FIXTURES / "hf/not-json.json").read_bytes(), now=NOW)
