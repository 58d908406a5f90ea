"""The OAI-PMH backfill against recorded answers: resumption tokens, checkpoints, interruptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire_ingest.config import Settings
from paperwire_ingest.harvesting import Sources, backfill
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_ingest.sources.http import BadResponse
from paperwire_ingest.sources.oai import set_spec, split_authors
from paperwire_ingest.state import Checkpoint, MemorySourceState
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED
from tests.fixtures.sources.replay import FakeClock, Replay, replay_sources

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OAI = "GET https://oaipmh.arxiv.org/oai?"
DAY_2 = (
    OAI
    + "from=2026-11-02&metadataPrefix=arXivRaw&set=cs%3Acs%3ALG&until=2026-11-02&verb=ListRecords"
)
DAY_3 = (
    OAI
    + "from=2026-11-03&metadataPrefix=arXivRaw&set=cs%3Acs%3ALG&until=2026-11-03&verb=ListRecords"
)
PAGE_2 = OAI + "resumptionToken=6543210%7C1001&verb=ListRecords"
PAGE_3 = OAI + "resumptionToken=6543210%7C2001&verb=ListRecords"
RANGE = [
    "2611.00101",
    "2611.00102",
    "2611.00103",
    "2611.00104",
    "2611.00105",
    "2611.00106",
    "2611.00107",
    "2610.09876",
]


class Harvest:
    def __init__(self, broker: RedisBroker, papers: list[PaperIngested]) -> None:
        self.broker = broker
        self.papers = papers
        self.seen = MemorySeenPapers()
        self.state = MemorySourceState()
        self.progress: list[tuple[int, str]] = []

    async def run(self, *cassettes: str) -> tuple[Checkpoint, Replay]:
        """One run of the CLI's backfill of cs.LG for 2 and 3 November, on its own connection."""
        clock = FakeClock()
        replay = Replay(*cassettes, clock=clock)
        settings = Settings(redis_url="redis://unused")
        sources: Sources = replay_sources(settings, replay, clock)
        try:
            checkpoint = await backfill(
                sources.oai,
                self.broker,
                self.seen,
                self.state,
                categories=["cs.LG"],
                start=date(2026, 11, 2),
                end=date(2026, 11, 3),
                now=NOW,
                progress=lambda c: self.progress.append((c.unit, c.token)),
            )
        finally:
            sources.close()
        return checkpoint, replay


@pytest.fixture
async def harvest() -> AsyncIterator[Harvest]:
    broker = RedisBroker()
    papers: list[PaperIngested] = []

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        papers.append(paper)

    async with TestRedisBroker(broker) as test_broker:
        yield Harvest(test_broker, papers)


async def test_a_range_is_harvested_day_by_day_following_resumption_tokens(
    harvest: Harvest,
) -> None:
    checkpoint, replay = await harvest.run("oai-whole-range")

    assert replay.requests == [DAY_2, PAGE_2, PAGE_3, DAY_3]
    assert [p.paper_id for p in harvest.papers] == RANGE  # the deleted record is not a paper
    assert (checkpoint.done, checkpoint.records, checkpoint.published) == (True, 9, 8)
    assert harvest.progress == [(0, "6543210|1001"), (0, "6543210|2001"), (1, ""), (2, "")]
    # 3 s between requests, whatever the pages.
    assert all(b - a >= 3.0 for a, b in pairwise(replay.times))


async def test_records_become_papers_with_versions_authors_and_first_submission_date(
    harvest: Harvest,
) -> None:
    await harvest.run("oai-whole-range")
    by_id = {p.paper_id: p for p in harvest.papers}

    diffusion = by_id["2610.09876"]
    assert (diffusion.version, diffusion.published) == (2, date(2026, 10, 8))
    assert diffusion.title == "Diffusion Models Learn Low-Dimensional Manifolds"
    assert diffusion.authors == ("Henri Poincar\\'e",)  # LaTeX accents left as written
    assert by_id["2611.00101"].authors == ("Ada Lovelace", "Alan Turing", "Grace Hopper")
    assert by_id["2611.00102"].authors == (
        "Karl Pearson (University College London, Galton Lab)",
        "Ronald Fisher",
    )
    assert by_id["2611.00105"].abstract == (
        r"Structure-aware attention makes positional encodings redundant on $k$-regular graphs "
        r"for $k\geq 3$."
    )
    assert {p.source for p in harvest.papers} == {"arxiv-oai"}


async def test_a_harvest_interrupted_halfway_and_run_again_ends_with_each_paper_once(
    harvest: Harvest,
) -> None:
    # Page 2 arrives cut in half: the run stops, its checkpoint just past page 1.
    with pytest.raises(BadResponse, match="malformed or truncated"):
        await harvest.run("oai-until-page2-truncated")
    assert [p.paper_id for p in harvest.papers] == RANGE[:3]
    interrupted = await harvest.state.checkpoint("cs.LG:2026-11-02:2026-11-03")
    assert interrupted is not None
    assert (interrupted.unit, interrupted.token, interrupted.done) == (0, "6543210|1001", False)

    checkpoint, replay = await harvest.run("oai-from-page2")

    # Page 1 is not asked for again; nothing is missed and nothing published twice.
    assert replay.requests == [PAGE_2, PAGE_3, DAY_3]
    assert [p.paper_id for p in harvest.papers] == RANGE
    assert (checkpoint.done, checkpoint.published) == (True, 8)


async def test_an_expired_resumption_token_starts_its_day_again_without_republishing(
    harvest: Harvest,
) -> None:
    with pytest.raises(BadResponse):
        await harvest.run("oai-until-page2-truncated")

    checkpoint, replay = await harvest.run("oai-expired-token", "oai-whole-range")

    assert replay.requests == [PAGE_2, DAY_2, PAGE_2, PAGE_3, DAY_3]
    assert [p.paper_id for p in harvest.papers] == RANGE
    assert checkpoint.published == 8


async def test_a_finished_backfill_run_again_asks_nothing(harvest: Harvest) -> None:
    await harvest.run("oai-whole-range")
    checkpoint, replay = await harvest.run()

    assert replay.requests == []
    assert checkpoint.done and len(harvest.papers) == len(RANGE)


@pytest.mark.parametrize(
    ("category", "spec"),
    [
        ("cs.LG", "cs:cs:LG"),
        ("stat.ML", "stat:stat:ML"),
        ("hep-th", "physics:hep-th"),
        ("astro-ph.CO", "physics:astro-ph:CO"),
        ("math", "math"),
    ],
)
def test_a_category_maps_to_its_oai_set(category: str, spec: str) -> None:
    assert set_spec(category) == spec


def test_authors_split_on_commas_and_and_but_not_inside_affiliations() -> None:
    assert split_authors("A. One (X, Y), B. Two, and C. Three") == (
        "A. One (X, Y)",
        "B. Two",
        "C. Three",
    )
    assert split_authors("Alexander Anderson and Sandra Andrews") == (
        "Alexander Anderson",
        "Sandra Andrews",
    )
