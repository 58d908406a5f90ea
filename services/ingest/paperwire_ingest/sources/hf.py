"""Hugging Face daily papers: which arXiv papers the community reads, and how many upvotes each has.

The listing (``/api/daily_papers?date=...``) is fetched with our client and read into
huggingface_hub's own ``PaperInfo``. ``HfApi.list_daily_papers`` itself is not called: it sends
its request through huggingface_hub's process-wide session, out of reach of our allowed hosts and
limits (and of recorded answers in tests), and it refuses to run with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import httpx2
from huggingface_hub.hf_api import PaperInfo

from paperwire_ingest.parsing import arxiv_url, clip_abstract, normalise_text, parse_arxiv_id
from paperwire_ingest.sources.http import BadResponse, Unavailable
from paperwire_shared.events import PaperIngested

log = logging.getLogger(__name__)

SOURCE = "hf-daily"
HF_URL = "https://huggingface.co/api/daily_papers"
# Papers per request; a day has 10 to 80. Pages beyond this many are not read.
PAGE_SIZE = 100
MAX_PAGES = 5


@dataclass(frozen=True)
class Upvoted:
    """One paper of a daily listing."""

    paper_id: str
    upvotes: int
    # Built from the listing's own fields, for when the arXiv API does not know the paper.
    paper: PaperIngested | None


def _upvoted(item: dict[str, Any], *, now: datetime) -> Upvoted | None:
    try:
        info = PaperInfo(**item)
    except (TypeError, ValueError, AttributeError) as exc:
        log.warning("daily papers: an item could not be read (%s)", exc)
        return None
    parsed = parse_arxiv_id(str(info.id or ""))
    if parsed is None:
        log.info("daily papers: %r is not an arXiv id, skipped", info.id)
        return None
    paper_id, _ = parsed
    upvotes = info.upvotes or 0  # PaperInfo gives None for 0
    title = normalise_text(info.title or "")
    paper = None
    if title:
        paper = PaperIngested(
            paper_id=paper_id,
            source=SOURCE,
            title=title,
            abstract=clip_abstract(normalise_text(info.summary or "")),
            authors=tuple(
                name for name in (normalise_text(a.name) for a in info.authors or ()) if name
            ),
            published=info.published_at.date() if info.published_at else None,
            url=arxiv_url(paper_id),
            popularity=upvotes,
            ingested_at=now,
        )
    return Upvoted(paper_id, upvotes, paper)


def _items(body: bytes) -> list[Any]:
    try:
        items = json.loads(body)
    except ValueError as exc:
        raise BadResponse(f"daily papers: not JSON ({exc})") from None
    if not isinstance(items, list):
        raise BadResponse("daily papers: expected a JSON list")
    return items


def _parse(items: list[Any], *, now: datetime) -> list[Upvoted]:
    found = (_upvoted(item, now=now) for item in items if isinstance(item, dict))
    return [item for item in found if item is not None]


def parse_daily_papers(body: bytes, *, now: datetime) -> list[Upvoted]:
    """The papers of one listing; raises ``BadResponse`` unless it is a JSON list."""
    return _parse(_items(body), now=now)


class DailyPapers(Protocol):
    def listing(self, day: date, *, now: datetime) -> list[Upvoted]:
        """The papers listed on ``day``, with their upvotes now."""
        ...


class HttpDailyPapers:
    def __init__(self, client: httpx2.Client, url: str = HF_URL) -> None:
        self._client = client
        self._url = url

    def listing(self, day: date, *, now: datetime) -> list[Upvoted]:
        papers: list[Upvoted] = []
        for page in range(MAX_PAGES):
            params: dict[str, str | int] = {"date": day.isoformat(), "limit": PAGE_SIZE, "p": page}
            response = self._client.get(self._url, params=params)
            if response.status_code != 200:
                raise Unavailable(f"daily papers: HTTP {response.status_code}")
            items = _items(response.content)
            papers.extend(_parse(items, now=now))
            if len(items) < PAGE_SIZE:
                break
        return papers
