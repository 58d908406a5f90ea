"""A user's personal feeds (Atom, RSS 2.0, JSON Feed 1.1) of the papers their digests carried (pure).

Hand-written templates rather than a feed library: the three formats are a page of markup each, and
the libraries that write them pull in lxml.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from paperwire_recommend.ranking import Ranked
from paperwire_recommend.store import DigestRecord

MAX_ITEMS = 100
# Digests whose papers the user was (or is about to be) sent: the feed shows the same items.
FEED_STATES = ("due", "sending", "sent")


@dataclass(frozen=True)
class FeedItem:
    paper_id: str
    title: str
    summary: str
    authors: tuple[str, ...]
    url: str | None
    reason: str
    published: datetime  # when its digest was due

    @property
    def id(self) -> str:
        # A paper is never sent to one user twice, so it names the item within their feed.
        return f"urn:paperwire:paper:{self.paper_id}"

    @property
    def link(self) -> str:
        return self.url or f"https://arxiv.org/abs/{self.paper_id}"

    @property
    def rfc822(self) -> str:
        return format_datetime(self.published)


@dataclass(frozen=True)
class Feed:
    title: str
    self_url: str  # the feed's own URL (signed), base of the other formats' URLs
    home_url: str
    updated: datetime
    items: list[FeedItem]

    @property
    def rfc822(self) -> str:
        return format_datetime(self.updated)


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())


def feed_items(records: Iterable[DigestRecord], limit: int = MAX_ITEMS) -> list[FeedItem]:
    """The papers of the user's digests, newest digest first."""
    items = []
    for record in records:
        if record.state not in FEED_STATES:
            continue
        for paper in record.papers:
            items.append(
                FeedItem(
                    paper_id=str(paper["paper_id"]),
                    title=_text(paper.get("title")),
                    summary=_text(paper.get("abstract")),
                    authors=tuple(_text(a) for a in paper.get("authors") or ()),
                    url=safe_url(paper.get("url")),
                    reason=_text(paper.get("reason")),
                    published=record.due_at,
                )
            )
            if len(items) == limit:
                return items
    return items


def live_item(ranked: Ranked, payload: dict[str, Any]) -> FeedItem:
    """A paper ranked when the feed is read (a user who gets no digests)."""
    embedded = payload.get("embedded_at")
    return FeedItem(
        paper_id=ranked.paper_id,
        title=_text(payload.get("title") or ranked.paper_id),
        summary=_text(payload.get("abstract")),
        authors=tuple(_text(a) for a in payload.get("authors") or ()),
        url=safe_url(payload.get("url")),
        reason=_text(ranked.reason),
        published=datetime.fromtimestamp(float(embedded), UTC) if embedded else datetime.now(UTC),
    )


def safe_url(url: Any) -> str | None:
    text = _text(url)
    return text if text.lower().startswith(("https://", "http://")) and " " not in text else None


@functools.cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("paperwire_recommend", "templates"),
        autoescape=select_autoescape(["xml", "html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def atom(feed: Feed) -> str:
    return _templates().get_template("feed.atom.xml").render(feed=feed)


def rss(feed: Feed) -> str:
    return _templates().get_template("feed.rss.xml").render(feed=feed)


def json_feed(feed: Feed) -> dict[str, Any]:
    """JSON Feed 1.1 (jsonfeed.org/version/1.1)."""
    return {
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed.title,
        "home_page_url": feed.home_url,
        "feed_url": feed.self_url,
        "items": [
            {
                "id": item.id,
                "url": item.link,
                "title": item.title,
                "summary": item.reason,
                "content_text": f"{item.summary}\n\nWhy: {item.reason}"
                if item.summary
                else item.reason,
                "date_published": item.published.isoformat(),
                "authors": [{"name": name} for name in item.authors],
            }
            for item in feed.items
        ],
    }
