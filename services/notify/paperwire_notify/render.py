"""Renders a DigestDue as a multipart email (plain text and HTML): pure, reads only templates."""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import UTC
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from paperwire_shared.events import DigestDue, RankedPaper

ABSTRACT_CHARS = 300
SUBJECT_TITLE_CHARS = 60
MAX_AUTHORS = 3


class InvalidRecipient(ValueError):
    """The digest's address is not one valid address: sending it can never work."""


@dataclass(frozen=True)
class PaperView:
    """One paper as the templates show it: every field already shortened and single-line."""

    title: str
    authors: str
    abstract: str
    link: str | None
    reason: str


def message_id(digest_key: str) -> str:
    """The same digest always gets the same Message-ID: a resend is recognisable as a duplicate."""
    return f"<{hashlib.sha256(digest_key.encode()).hexdigest()[:32]}@paperwire>"


def one_line(text: str) -> str:
    """Whitespace (CR/LF included) collapsed to single spaces and control characters dropped."""
    collapsed = " ".join(text.split())
    return "".join(ch for ch in collapsed if unicodedata.category(ch)[0] != "C")


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut on a word boundary to at most ``limit`` characters and "…"."""
    text = one_line(text)
    if len(text) <= limit:
        return text
    window = text[: limit + 1]
    cut = window.rsplit(" ", 1)[0] if " " in window else text[:limit]
    return cut.rstrip(" ,;:.-") + "…"


def safe_link(url: str | None) -> str | None:
    """Only http(s) links make it into the email: a ``javascript:`` URL survives HTML escaping."""
    if not url:
        return None
    url = one_line(url)
    return url if url.lower().startswith(("https://", "http://")) and " " not in url else None


def shorten_authors(authors: tuple[str, ...]) -> str:
    names = [one_line(a) for a in authors if a.strip()]
    if len(names) > MAX_AUTHORS:
        return ", ".join(names[:MAX_AUTHORS]) + " et al."
    return ", ".join(names)


def subject(digest: DigestDue) -> str:
    count = len(digest.papers)
    noun = "paper" if count == 1 else "papers"
    head = f"paperwire: {count} new {noun} for you"
    if not digest.papers:
        return head
    return f"{head} — {shorten(digest.papers[0].title, SUBJECT_TITLE_CHARS)}"


def paper_view(paper: RankedPaper) -> PaperView:
    return PaperView(
        title=one_line(paper.title),
        authors=shorten_authors(paper.authors),
        abstract=shorten(paper.abstract, ABSTRACT_CHARS),
        link=safe_link(paper.url),
        reason=one_line(paper.reason),
    )


def recipient(email: str) -> Address:
    """``email`` parsed as one addr-spec: CR/LF, a display name or a second address are refused."""
    try:
        return Address(addr_spec=email)
    except (ValueError, IndexError):
        # The parser's message quotes the address, which must stay out of logs: raise our own.
        raise InvalidRecipient("the recipient is not one valid email address") from None


@functools.cache
def _templates() -> Environment:
    # Autoescape follows the template's extension: on for digest.html, off for digest.txt.
    return Environment(
        loader=PackageLoader("paperwire_notify", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=False, default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_digest(digest: DigestDue, *, sender: str, base_url: str | None) -> EmailMessage:
    """The digest as a multipart/alternative email; InvalidRecipient for an unusable address."""
    context = {
        "subject": subject(digest),
        "papers": [paper_view(p) for p in digest.papers],
        "base_url": base_url.rstrip("/") if base_url else None,
    }
    text = _templates().get_template("digest.txt").render(context)
    html = _templates().get_template("digest.html").render(context)

    msg = EmailMessage(policy=policy.default)
    msg["Subject"] = context["subject"]
    msg["From"] = sender
    msg["To"] = recipient(digest.email)
    created = digest.created_at
    msg["Date"] = format_datetime(created if created.tzinfo else created.replace(tzinfo=UTC))
    msg["Message-ID"] = message_id(digest.digest_key)
    # Asks mail servers and clients not to send auto-replies (RFC 3834).
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg
