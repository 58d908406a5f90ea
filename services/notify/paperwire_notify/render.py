"""Renders a DigestDue as a multipart email (plain text and HTML): pure, reads only templates.

Every field from a paper is untrusted (arXiv titles hold line breaks, anyone can submit a title
with markup): the HTML template autoescapes, headers get one collapsed line, links are http(s)
only. Links back to paperwire (feedback, manage, unsubscribe) are signed tokens that name the user
by id, never by address.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import UTC
from email import policy
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import css_inline
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.links import LinkSigner, token_id

ABSTRACT_CHARS = 300
SUBJECT_TITLE_CHARS = 60
MAX_AUTHORS = 3
# An email lists at most this many papers unless the caller says otherwise (notify's max_papers).
MAX_PAPERS = 50
# The one-click feedback of each paper: (label, kind, reason). A dislike with a reason tells the
# ranking why: "off-topic" (wrong subject) is not "low quality" (right subject, weak paper).
FEEDBACK = (
    ("like", "like", None),
    ("dislike", "dislike", None),
    ("off_topic", "dislike", "off-topic"),
    ("low_quality", "dislike", "low quality"),
)


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
    # label (like, dislike, off_topic, low_quality) -> signed URL; empty without a base URL.
    feedback: dict[str, str]


@dataclass(frozen=True)
class DigestLinks:
    """Signed links for one digest, under ``base_url`` (recommend's web pages)."""

    signer: LinkSigner
    base_url: str
    digest: DigestDue

    def feedback(self, paper: RankedPaper) -> dict[str, str]:
        key, user = self.digest.digest_key, self.digest.user_id
        urls = {}
        for label, kind, reason in FEEDBACK:
            # The token id names this exact action, so the same link acts once and a re-rendered
            # email (a retry) carries links with the same ids.
            jti = token_id("feedback", key, paper.paper_id, kind, reason or "")
            data: dict[str, Any] = {"d": key, "p": paper.paper_id, "k": kind}
            if reason:
                data["r"] = reason
            token = self.signer.sign("feedback", user, jti, **data)
            urls[label] = f"{self.base_url}/feedback/{token}"
        return urls

    @property
    def unsubscribe(self) -> str:
        jti = token_id("unsubscribe", self.digest.digest_key)
        token = self.signer.sign("unsubscribe", self.digest.user_id, jti)
        return f"{self.base_url}/unsubscribe/{token}"

    @property
    def manage(self) -> str:
        jti = token_id("manage", self.digest.digest_key)
        return f"{self.base_url}/manage/{self.signer.sign('manage', self.digest.user_id, jti)}"


class _UnfoldedHeader(UnstructuredHeader):
    """A header written on one line: folding would turn a long URL into RFC 2047 encoded words,
    which mail providers do not decode in List-Unsubscribe. Lines stay under SMTP's 998."""

    name: str  # from BaseHeader, which the header registry mixes in

    def fold(self, *, policy: Any) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _policy() -> policy.EmailPolicy[EmailMessage]:
    registry = HeaderRegistry()
    registry.map_to_type("list-unsubscribe", _UnfoldedHeader)  # type: ignore[arg-type]
    return policy.default.clone(header_factory=registry)


_POLICY = _policy()


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
    if not count:
        return "paperwire: no new papers for you this time"
    noun = "paper" if count == 1 else "papers"
    head = f"paperwire: {count} new {noun} for you"
    return f"{head} — {shorten(digest.papers[0].title, SUBJECT_TITLE_CHARS)}"


def paper_view(paper: RankedPaper, links: DigestLinks | None = None) -> PaperView:
    return PaperView(
        title=one_line(paper.title),
        authors=shorten_authors(paper.authors),
        abstract=shorten(paper.abstract, ABSTRACT_CHARS),
        link=safe_link(paper.url),
        reason=one_line(paper.reason),
        feedback=links.feedback(paper) if links else {},
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


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    # Many mail clients drop <style>: every rule is copied onto the elements it styles. Only the
    # @media rules (dark mode) stay in a <style>, for the clients that honour it.
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def render_html(context: dict[str, Any]) -> str:
    return _inliner().inline(_templates().get_template("digest.html").render(context))


def render_digest(
    digest: DigestDue,
    *,
    sender: str,
    base_url: str | None,
    signer: LinkSigner | None = None,
    max_papers: int = MAX_PAPERS,
) -> EmailMessage:
    """The digest as a multipart/alternative email; InvalidRecipient for an unusable address.

    With a ``base_url`` and a ``signer``, each paper carries one-click feedback links and the email
    has manage and unsubscribe links, with the RFC 8058 one-click unsubscribe headers.
    """
    to = recipient(digest.email)
    base = one_line(base_url).rstrip("/") if base_url else None
    links = DigestLinks(signer, base, digest) if base and signer else None
    unsubscribe_url = links.unsubscribe if links else None
    context = {
        "subject": subject(digest),
        "papers": [paper_view(p, links) for p in digest.papers[:max_papers]],
        "empty_reason": one_line(digest.empty_reason or ""),
        "base_url": base,
        "manage_url": links.manage if links else None,
        "unsubscribe_url": unsubscribe_url,
    }
    text = _templates().get_template("digest.txt").render(context)
    html = render_html(context)

    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = context["subject"]
    msg["From"] = sender
    msg["To"] = to
    created = digest.created_at
    msg["Date"] = format_datetime(created if created.tzinfo else created.replace(tzinfo=UTC))
    msg["Message-ID"] = message_id(digest.digest_key)
    # Asks mail servers and clients not to send auto-replies (RFC 3834).
    msg["Auto-Submitted"] = "auto-generated"
    if unsubscribe_url:
        # RFC 8058: the mail provider POSTs "List-Unsubscribe=One-Click" to the URL itself.
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg
