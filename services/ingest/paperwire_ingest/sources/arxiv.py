"""arXiv's daily announcements: the per-category RSS feed says what was announced, the API what it is.

The feed (rss.arxiv.org, read with feedparser from bytes) lists each announcement's papers with
their announce type: ``new``, ``cross`` (cross-list), ``replace`` or ``replace-cross`` (a new
version). Full metadata comes from the arXiv API through the ``arxiv`` package, 100 ids a request.
The feed item itself is the fallback when the API lacks a paper or still shows an older version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import arxiv  # type: ignore[import-untyped]
import feedparser  # type: ignore[import-untyped]
import httpx2

from paperwire_ingest.parsing import (
    arxiv_url,
    clip_abstract,
    normalise_text,
    parse_arxiv_id,
)
from paperwire_ingest.sources.http import BadResponse, Unavailable
from paperwire_shared.events import PaperIngested

log = logging.getLogger(__name__)

SOURCE = "arxiv"
RSS_URL = "https://rss.arxiv.org/rss/"
API_URL = "https://export.arxiv.org/api/query"
# The API serves at most 2,000 results a page; 100 ids keep the URL short (~1.3 kB).
API_BATCH = 100
# arXiv's API now and then answers 200 with an empty page for ids that exist: ask again.
EMPTY_PAGE_RETRIES = 3

_GUID_PREFIX = "oai:arXiv.org:"


@dataclass(frozen=True)
class Listing:
    """One paper of an announcement, as the feed shows it."""

    paper_id: str
    version: int
    announce_type: str
    # Built from the feed item, for when the API cannot give better; None if the item is unfit.
    paper: PaperIngested | None


@dataclass(frozen=True)
class Announcement:
    """One day's feed: ``day`` is the announcement date (None if the feed has no date)."""

    day: date | None
    listings: tuple[Listing, ...]

    def counts(self) -> dict[str, int]:
        """How many listings of each announce type."""
        counts: dict[str, int] = {}
        for listing in self.listings:
            counts[listing.announce_type] = counts.get(listing.announce_type, 0) + 1
        return counts


def feed_url(base: str, categories: Iterable[str]) -> str:
    """One feed for all categories (``cs.CL+cs.LG``): a cross-listed paper is listed once."""
    return base + "+".join(sorted(categories))


def _authors(text: str) -> tuple[str, ...]:
    return tuple(name for name in (normalise_text(n) for n in text.split(",")) if name)


def _listing(entry: feedparser.FeedParserDict, *, now: datetime) -> Listing | None:
    guid = str(entry.get("id") or "")
    parsed = parse_arxiv_id(guid.removeprefix(_GUID_PREFIX)) or parse_arxiv_id(
        str(entry.get("link") or "")
    )
    if parsed is None:
        log.warning("feed item without an arXiv id skipped: %r", guid or entry.get("title"))
        return None
    paper_id, version = parsed
    description = str(entry.get("summary") or "")
    _, found, abstract = description.partition("Abstract:")
    title = normalise_text(str(entry.get("title") or ""))
    paper = None
    if title:
        paper = PaperIngested(
            paper_id=paper_id,
            source=SOURCE,
            title=title,
            abstract=clip_abstract(normalise_text(abstract if found else description)),
            authors=_authors(str(entry.get("author") or "")),
            categories=tuple(
                dict.fromkeys(t["term"] for t in entry.get("tags") or () if t.get("term"))
            ),
            url=arxiv_url(paper_id),
            version=version or 1,
            ingested_at=now,
        )
    announce_type = normalise_text(str(entry.get("arxiv_announce_type") or "new"))
    return Listing(paper_id, version or 1, announce_type, paper)


def parse_feed(body: bytes, *, now: datetime) -> Announcement:
    """The announcement in an arXiv RSS feed; raises ``BadResponse`` if it is not one.

    Given bytes, feedparser never fetches anything. HTML sanitising is off: arXiv's abstracts are
    plain text with LaTeX, and ``$a<b$`` must not be taken for a tag.
    """
    feed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    if feed.get("bozo") or not str(feed.get("version", "")).startswith("rss"):
        problem = feed.get("bozo_exception") or f"format {feed.get('version')!r}"
        raise BadResponse(f"not an RSS feed: {problem}")
    day = None
    if published := feed.feed.get("published"):
        try:
            # The channel's own offset (New York time) gives the announcement date.
            day = parsedate_to_datetime(published).date()
        except (TypeError, ValueError):
            log.warning("feed date %r not understood", published)
    listings = (_listing(entry, now=now) for entry in feed.entries)
    return Announcement(day, tuple(item for item in listings if item is not None))


def paper_from_result(result: arxiv.Result, *, now: datetime, source: str) -> PaperIngested | None:
    """The event for one API entry; None for an entry that is not a paper (the API's errors)."""
    parsed = parse_arxiv_id(result.entry_id)
    title = normalise_text(result.title)
    if parsed is None or not title:
        return None
    paper_id, version = parsed
    categories = dict.fromkeys(c for c in (result.primary_category, *result.categories) if c)
    return PaperIngested(
        paper_id=paper_id,
        source=source,
        title=title,
        abstract=clip_abstract(normalise_text(result.summary)),
        authors=tuple(name for name in (normalise_text(a.name) for a in result.authors) if name),
        categories=tuple(categories),
        published=result.published.date(),
        url=arxiv_url(paper_id),
        version=version or 1,
        ingested_at=now,
    )


def announced_papers(
    announcement: Announcement, metadata: dict[str, PaperIngested]
) -> list[PaperIngested]:
    """One event per paper of the announcement, in feed order.

    A paper listed twice (new in one category, cross-listed in another) is one paper. The API's
    metadata wins unless it is missing or older than the version the feed announces.
    """
    latest: dict[str, Listing] = {}
    for listing in announcement.listings:
        seen = latest.get(listing.paper_id)
        if seen is None or listing.version > seen.version:
            latest[listing.paper_id] = listing
    papers = []
    for paper_id, listing in latest.items():
        found = metadata.get(paper_id)
        if found is not None and found.version >= listing.version:
            papers.append(found)
        elif listing.paper is not None:
            papers.append(listing.paper)
    return papers


class ArxivFeed(Protocol):
    def announcement(self, categories: Sequence[str], *, now: datetime) -> Announcement:
        """Today's announcement for ``categories`` (empty on weekends and holidays)."""
        ...


class ArxivMetadata(Protocol):
    def papers(self, ids: Sequence[str], *, now: datetime, source: str) -> dict[str, PaperIngested]:
        """The latest version of each paper the API knows, by id."""
        ...


class HttpArxivFeed:
    def __init__(self, client: httpx2.Client, base_url: str = RSS_URL) -> None:
        self._client = client
        self._base = base_url

    def announcement(self, categories: Sequence[str], *, now: datetime) -> Announcement:
        response = self._client.get(feed_url(self._base, categories))
        if response.status_code != 200:
            raise Unavailable(f"arXiv feed: HTTP {response.status_code}")
        return parse_feed(response.content, now=now)


class HttpArxivMetadata:
    """The ``arxiv`` package's client, sending its requests through our polite client."""

    def __init__(
        self,
        client: httpx2.Client,
        url: str = API_URL,
        *,
        batch: int = API_BATCH,
        empty_page_retries: int = EMPTY_PAGE_RETRIES,
    ) -> None:
        # Its own delay and retries are off: our transport spaces and retries every arXiv call.
        self._arxiv = arxiv.Client(page_size=batch, delay_seconds=0, num_retries=0)
        # arxiv.Client takes no session argument; it only calls .get(url, headers=...) and reads
        # .status_code and .content, which an httpx2 client has. So every request it makes goes
        # through our transport: allowed hosts, the shared rate limit, recorded answers in tests.
        self._arxiv._session = client
        self._arxiv.query_url_format = url + "?{}"
        self._batch = batch
        self._empty_page_retries = empty_page_retries

    def papers(self, ids: Sequence[str], *, now: datetime, source: str) -> dict[str, PaperIngested]:
        found: dict[str, PaperIngested] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), self._batch):
            for result in self._fetch(unique[start : start + self._batch]):
                paper = paper_from_result(result, now=now, source=source)
                if paper is not None:
                    found[paper.paper_id] = paper
        return found

    def _fetch(self, ids: list[str]) -> list[arxiv.Result]:
        search = arxiv.Search(id_list=ids, max_results=len(ids))
        for attempt in range(self._empty_page_retries + 1):
            try:
                results = list(self._arxiv.results(search))
            except arxiv.ArxivError as exc:
                raise Unavailable(f"arXiv API: {exc}") from None
            if results:
                return results
            log.info(
                "arXiv API: empty page for %d ids (try %d): asking again", len(ids), attempt + 1
            )
        log.warning("arXiv API: still empty for %d ids; using the feed's own metadata", len(ids))
        return []
