"""arXiv's OAI-PMH interface: the records of a category changed on a day, one page at a time.

The backfill and the daily source's catch-up read it through oaipmh-scythe, whose requests go
through our polite client. Pages are asked for one by one, so the caller can checkpoint the
resumption token after each. Records come in the ``arXivRaw`` format, which lists every version.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx2
from oaipmh_scythe import Scythe
from oaipmh_scythe.exceptions import BadResumptionToken, NoRecordsMatch, OAIPMHException
from oaipmh_scythe.models import Record

from paperwire_ingest.parsing import arxiv_url, clip_abstract, normalise_text, parse_arxiv_id
from paperwire_ingest.sources.http import BadResponse, Unavailable
from paperwire_shared.events import PaperIngested

log = logging.getLogger(__name__)

SOURCE = "arxiv-oai"
OAI_URL = "https://oaipmh.arxiv.org/oai"
METADATA_PREFIX = "arXivRaw"

_OAI = "{http://www.openarchives.org/OAI/2.0/}"
# Archives filed under the "physics" group in arXiv's OAI sets (physics:hep-th, physics:astro-ph:CO).
_PHYSICS = frozenset(
    {
        "astro-ph",
        "cond-mat",
        "gr-qc",
        "hep-ex",
        "hep-lat",
        "hep-ph",
        "hep-th",
        "math-ph",
        "nlin",
        "nucl-ex",
        "nucl-th",
        "physics",
        "quant-ph",
    }
)
_AND = re.compile(r",?\s+and\s+")


class ExpiredToken(Exception):
    """The repository no longer knows a resumption token: start that day again."""


@dataclass(frozen=True)
class OaiPage:
    papers: tuple[PaperIngested, ...]
    # The next page's resumption token; None on the last page.
    token: str | None
    records: int = 0
    list_size: int | None = None


def set_spec(category: str) -> str:
    """The OAI set of an arXiv category: ``cs.LG`` is ``cs:cs:LG``, ``hep-th`` is ``physics:hep-th``."""
    archive, _, subject = category.partition(".")
    group = "physics" if archive in _PHYSICS else archive
    if subject:
        return f"{group}:{archive}:{subject}"
    return archive if group == archive else f"{group}:{archive}"


def split_authors(text: str) -> tuple[str, ...]:
    """``"A (X, Y), B, and C"`` as ``("A (X, Y)", "B", "C")``: commas inside brackets stay."""
    names: list[str] = []
    current: list[str] = []
    depth = 0
    for char in _AND.sub(",", normalise_text(text)):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth <= 0:
            names.append("".join(current))
            current = []
        else:
            current.append(char)
    names.append("".join(current))
    return tuple(name.strip() for name in names if name.strip())


def _first(metadata: Mapping[str, Sequence[str | None]], key: str) -> str:
    values = metadata.get(key) or [None]
    return values[0] or ""


def paper_from_raw(
    metadata: Mapping[str, Sequence[str | None]], *, now: datetime, source: str = SOURCE
) -> PaperIngested | None:
    """The event for one ``arXivRaw`` record; None when it has no arXiv id or title."""
    parsed = parse_arxiv_id(_first(metadata, "id"))
    title = normalise_text(_first(metadata, "title"))
    if parsed is None or not title:
        return None
    paper_id, _ = parsed
    published = None
    if first_date := _first(metadata, "date"):
        try:
            published = parsedate_to_datetime(first_date).date()  # v1's date: first submission
        except (TypeError, ValueError):
            log.warning("%s: version date %r not understood", paper_id, first_date)
    return PaperIngested(
        paper_id=paper_id,
        source=source,
        title=title,
        abstract=clip_abstract(normalise_text(_first(metadata, "abstract"))),
        authors=split_authors(_first(metadata, "authors")),
        categories=tuple(dict.fromkeys(_first(metadata, "categories").split())),
        published=published,
        url=arxiv_url(paper_id),
        # arXivRaw lists one <version> per version, v1 to the latest.
        version=len(metadata.get("version") or ()) or 1,
        ingested_at=now,
    )


class OaiHarvester(Protocol):
    def page(self, set_spec: str, day: date, token: str | None, *, now: datetime) -> OaiPage:
        """One page of the records of ``set_spec`` changed on ``day``; ``token`` picks the page."""
        ...


class _PoliteScythe(Scythe):
    """oaipmh-scythe with our client in place of the one it would build for itself."""

    def __init__(self, endpoint: str, client: httpx2.Client) -> None:
        super().__init__(endpoint)
        self._polite = client

    @property
    def client(self) -> httpx2.Client:
        return self._polite


class ScytheHarvester:
    def __init__(self, client: httpx2.Client, url: str = OAI_URL) -> None:
        self._scythe = _PoliteScythe(url, client)

    def page(self, set_spec: str, day: date, token: str | None, *, now: datetime) -> OaiPage:
        if token:
            query = {"verb": "ListRecords", "resumptionToken": token}
        else:
            query = {
                "verb": "ListRecords",
                "metadataPrefix": METADATA_PREFIX,
                "set": set_spec,
                "from": day.isoformat(),
                "until": day.isoformat(),
            }
        try:
            response = self._scythe.harvest(query)
        except NoRecordsMatch:
            return OaiPage((), None)
        except BadResumptionToken as exc:
            raise ExpiredToken(str(exc)) from None
        except OAIPMHException as exc:
            raise BadResponse(f"OAI-PMH error: {type(exc).__name__}: {exc}") from None
        except httpx2.HTTPStatusError as exc:
            raise Unavailable(f"OAI-PMH: HTTP {exc.response.status_code}") from None
        root = response.xml
        if root is None or root.tag != f"{_OAI}OAI-PMH":
            raise BadResponse("OAI-PMH: the answer is not an OAI-PMH document")
        records = [Record(element) for element in root.iterfind(f".//{_OAI}record")]
        papers = (paper_from_raw(r.metadata, now=now) for r in records if not r.deleted)
        token_element = root.find(f".//{_OAI}resumptionToken")
        next_token, list_size = None, None
        if token_element is not None:
            next_token = (token_element.text or "").strip() or None
            size = token_element.get("completeListSize")
            list_size = int(size) if size and size.isdigit() else None
        return OaiPage(
            tuple(p for p in papers if p is not None), next_token, len(records), list_size
        )
