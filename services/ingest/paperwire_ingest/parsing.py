"""Pure parsing of paper files into ``PaperIngested``: text clean-up, ids, JSON Lines, the HF page.

No I/O and no clock: callers pass lines and ``now``. Every non-blank input line yields either a
paper or a ``LineError`` carrying its 1-based line number, so one bad line never stops a file.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from paperwire_shared.events import PaperIngested

Format = Literal["jsonl", "hf-page"]
# The `source` field of the events each format produces.
SOURCES: dict[Format, str] = {"jsonl": "file", "hf-page": "hf-page"}

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})

# Any run of whitespace or control characters: a title with "\r\nBcc: x" must stay one line, since
# titles end up in email subjects (see STACK-NOTES.md, "Mail").
_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")

# New style: YYMM.NNNN from 2007-04 to 2014, YYMM.NNNNN since 2015. Old style: archive[.XX]/YYMMNNN,
# where the subject class .XX is not part of the identifier proper, so it is dropped.
_ARXIV_ID = re.compile(
    r"(?P<id>(?:0[7-9]|1[0-4])(?:0[1-9]|1[0-2])\.\d{4}|(?:1[5-9]|[2-9]\d)(?:0[1-9]|1[0-2])\.\d{5}"
    r"|(?P<archive>[a-z]+(?:-[a-z]+)*)(?:\.[A-Za-z]{2})?/(?P<num>\d{7}))"
    r"(?:v(?P<version>[1-9]\d*))?"
)
_ARXIV_FORMS = re.compile(
    r"(?:arxiv:|(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)?"
    rf"(?P<ref>{_ARXIV_ID.pattern})(?:\.pdf)?/?(?:[?#].*)?",
    re.IGNORECASE,
)

# The event's limit. Some records carry a whole paper as "abstract" (2 of CiteULike's 16,980,
# ~85 kB): the paper is still worth having, and the model reads only the first 256 tokens anyway.
MAX_ABSTRACT: int = next(
    rule.max_length
    for rule in PaperIngested.model_fields["abstract"].metadata
    if getattr(rule, "max_length", None)
)

_HF_HEADER = "get trending papers"
_HF_SUBSCRIBE = "Subscribe"


@dataclass(frozen=True)
class LineError:
    """A line that could not become a paper, and why (fit to show a user)."""

    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}"


ParsedLine: TypeAlias = PaperIngested | LineError


def normalise_text(text: str) -> str:
    """Unicode NFC, every run of whitespace or control characters as one space, stripped.

    LaTeX is left as it is: ``$\\alpha$`` is what authors wrote and what the model reads.
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def parse_arxiv_id(text: str) -> tuple[str, int | None] | None:
    """``(id without version, version or None)`` for an arXiv id, ``arXiv:`` id or arxiv.org URL.

    >>> parse_arxiv_id("https://arxiv.org/abs/2503.11731v2")
    ('2503.11731', 2)
    >>> parse_arxiv_id("math.GT/0309136")
    ('math/0309136', None)
    """
    match = _ARXIV_FORMS.fullmatch(text.strip())
    if match is None:
        return None
    ref = _ARXIV_ID.fullmatch(match["ref"])
    assert ref is not None  # the same pattern matched inside _ARXIV_FORMS
    paper_id = f"{ref['archive'].lower()}/{ref['num']}" if ref["archive"] else ref["id"]
    return paper_id, int(ref["version"]) if ref["version"] else None


def arxiv_url(arxiv_id: str) -> str:
    return f"https://arxiv.org/abs/{arxiv_id}"


def stable_id(title: str) -> str:
    """The id of a paper without an arXiv id: the same title always gives the same id."""
    key = normalise_text(title).lower()
    return "title-" + hashlib.sha1(key.encode()).hexdigest()[:16]


def detect_format(name: str, head: str) -> Format | None:
    """Which parser reads a file, from its name and first characters; None when neither fits.

    ``name`` may end in ``.gz``: the suffix before it counts.
    """
    lowered = name.lower().removesuffix(".gz")
    suffix = lowered[lowered.rfind(".") :] if "." in lowered else ""
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    first = first.lstrip("\ufeff")
    if suffix in JSONL_SUFFIXES or first.startswith("{") or not first:
        return "jsonl"
    if first.lower().startswith(_HF_HEADER) or first.startswith(_HF_SUBSCRIBE) or suffix == ".txt":
        return "hf-page"
    return None


class _Record(BaseModel):
    """One JSON Lines record (schema: README, Commands); strict: a wrong type is an error."""

    model_config = ConfigDict(strict=True, extra="ignore")

    id: str | None = None
    title: str
    abstract: str | None = None
    authors: tuple[str, ...] | None = None
    categories: tuple[str, ...] | None = None
    published: date | None = None
    url: str | None = None
    version: int | None = None
    popularity: int | None = None


def _reason(exc: ValidationError) -> str:
    return "; ".join(_describe(error) for error in exc.errors(include_url=False))


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        return "invalid JSON: " + error["msg"].removeprefix("Invalid JSON: ")
    if error["type"] == "model_type":
        return "expected a JSON object"
    if error["type"] == "missing":
        return f"{where}: required field missing"
    return f"{where}: {error['msg']}" if where else error["msg"]


def clip_abstract(text: str) -> str:
    """``text`` cut to the event's limit, at a space where there is one."""
    if len(text) <= MAX_ABSTRACT:
        return text
    cut = text[: MAX_ABSTRACT + 1]
    return cut[: cut.rfind(" ")] if " " in cut else cut[:MAX_ABSTRACT]


def _clean_list(items: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(text for text in (normalise_text(item) for item in items or ()) if text)


def paper_from_record(record: _Record, *, now: datetime, source: str) -> PaperIngested:
    """The event for one validated record; raises ``ValueError`` (ValidationError too) if unfit."""
    title = normalise_text(record.title)
    if not title:
        raise ValueError("title: empty")
    url = record.url.strip() if record.url and record.url.strip() else None
    version = record.version
    arxiv = None
    raw_id = (record.id or "").strip()
    if raw_id:
        arxiv = parse_arxiv_id(raw_id)
        paper_id = arxiv[0] if arxiv else raw_id
    else:
        arxiv = parse_arxiv_id(url) if url else None
        paper_id = arxiv[0] if arxiv else stable_id(title)
    if arxiv is not None:
        version = arxiv[1] or version
        url = url or arxiv_url(arxiv[0])
    return PaperIngested(
        paper_id=paper_id,
        source=source,
        title=title,
        abstract=clip_abstract(normalise_text(record.abstract or "")),
        authors=_clean_list(record.authors),
        categories=_clean_list(record.categories),
        published=record.published,
        url=url,
        version=version or 1,
        popularity=record.popularity,
        ingested_at=now,
    )


def parse_jsonl(
    lines: Iterable[str], *, now: datetime, source: str = SOURCES["jsonl"]
) -> Iterator[ParsedLine]:
    """One paper or ``LineError`` per non-blank line of JSON Lines."""
    for line_no, line in enumerate(lines, start=1):
        text = line.strip().lstrip("\ufeff") if line_no == 1 else line.strip()
        if not text:
            continue
        try:
            record = _Record.model_validate_json(text)
            yield paper_from_record(record, now=now, source=source)
        except ValidationError as exc:
            yield LineError(line_no, _reason(exc))
        except ValueError as exc:
            yield LineError(line_no, str(exc))


def _strip_subscribe(text: str) -> str:
    """The saved page glues the "Subscribe" button onto the first title ("SubscribeExtended ...").

    Only stripped when what follows cannot continue the word, so "Subscriber churn ..." survives.
    """
    rest = text[len(_HF_SUBSCRIBE) :]
    if text.startswith(_HF_SUBSCRIBE) and not rest[:1].islower():
        return rest.strip()
    return text


def parse_hf_page(
    lines: Iterable[str], *, now: datetime, source: str = SOURCES["hf-page"]
) -> Iterator[ParsedLine]:
    """Papers from a saved Hugging Face papers page: header lines, then title and abstract lines.

    Blank lines are skipped, so pairs are formed from the non-blank lines; a title left without an
    abstract at the end is reported as an error. Ids are title hashes: the page shows no arXiv id.
    """
    title: tuple[int, str] | None = None
    in_header = True
    for line_no, line in enumerate(lines, start=1):
        text = normalise_text(line.lstrip("\ufeff") if line_no == 1 else line)
        if not text:
            continue
        if title is None:
            if in_header:
                if text.lower().startswith(_HF_HEADER):
                    continue
                text = _strip_subscribe(text)
                if not text:
                    continue
                in_header = False
            title = (line_no, text)
            continue
        title_no, title_text = title
        title = None
        try:
            yield PaperIngested(
                paper_id=stable_id(title_text),
                source=source,
                title=title_text,
                abstract=clip_abstract(text),
                ingested_at=now,
            )
        except ValidationError as exc:
            yield LineError(title_no, _reason(exc))
    if title is not None:
        yield LineError(title[0], "a title without an abstract line after it (file ends here)")


def parse_lines(fmt: Format, lines: Iterable[str], *, now: datetime) -> Iterator[ParsedLine]:
    """Dispatch to the parser of ``fmt``."""
    if fmt == "jsonl":
        return parse_jsonl(lines, now=now)
    return parse_hf_page(lines, now=now)
