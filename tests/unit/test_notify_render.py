"""render_digest: both parts, every paper's fields, escaping, safe headers, stable Message-ID."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from paperwire_notify.render import InvalidRecipient, render_digest, shorten, shorten_authors
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.links import LinkSigner

SENDER = "paperwire <digest@paperwire.localhost>"


def paper(n: int = 1, **changes: object) -> RankedPaper:
    fields: dict[str, object] = {
        "paper_id": f"arxiv:2611.{n:05d}",
        "title": f"Sparse attention, part {n}",
        "abstract": "We study sparse attention. " * 30,
        "authors": ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        "url": f"https://arxiv.org/abs/2611.{n:05d}",
        "score": 0.9,
        "reason": "close to your interest: efficient transformers",
    }
    return RankedPaper(**(fields | changes))


def digest(*papers: RankedPaper, key: str = "user-1:2026-11-27") -> DigestDue:
    return DigestDue(
        digest_key=key,
        user_id="user-1",
        email="reader@example.org",
        papers=papers or (paper(1), paper(2)),
        created_at=datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
    )


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def reparsed(msg: EmailMessage) -> EmailMessage:
    """The message as a receiving server would read it back from the wire."""
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_digest_is_multipart_alternative_with_text_and_html() -> None:
    msg = render_digest(digest(), sender=SENDER, base_url=None)

    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["To"] == "reader@example.org"
    assert msg["From"] == SENDER
    assert msg["Date"] == "Fri, 27 Nov 2026 07:00:00 +0000"


def test_each_paper_shows_title_authors_reason_and_link_in_both_parts() -> None:
    msg = render_digest(digest(paper(1), paper(2)), sender=SENDER, base_url=None)

    for body in parts(msg):
        for n in (1, 2):
            assert f"Sparse attention, part {n}" in body
            assert f"https://arxiv.org/abs/2611.{n:05d}" in body
        assert "Ada Lovelace, Alan Turing, Grace Hopper et al." in body
        assert "Edsger Dijkstra" not in body
        assert "close to your interest: efficient transformers" in body
        assert "We study sparse attention." in body


def test_long_abstract_is_cut_on_a_word_boundary() -> None:
    short = shorten("word " * 200, 300)

    assert len(short) <= 301
    assert short.endswith("word…")


def test_few_authors_are_listed_in_full() -> None:
    assert shorten_authors(("A", "B", "C")) == "A, B, C"
    assert shorten_authors(()) == ""


def test_title_with_script_is_escaped_in_html() -> None:
    evil = paper(1, title="<script>alert('x')</script> & friends", reason="<b>bold</b>")

    _, html = parts(render_digest(digest(evil), sender=SENDER, base_url=None))

    assert "<script>" not in html
    # The CSS inliner reserialises the page: quotes in text need no escaping there.
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; friends" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_javascript_link_is_left_out() -> None:
    text, html = parts(
        render_digest(digest(paper(1, url="javascript:alert(1)")), sender=SENDER, base_url=None)
    )

    assert "javascript:" not in html
    assert "javascript:" not in text


def test_title_with_crlf_cannot_inject_a_header() -> None:
    evil = paper(1, title="Attention\r\nBcc: victim@example.com\r\n\r\nbody")

    msg = reparsed(render_digest(digest(evil), sender=SENDER, base_url=None))

    assert msg["Bcc"] is None
    assert msg.get_all("To") == ["reader@example.org"]
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["Subject"].startswith("paperwire: 1 new paper for you — Attention Bcc:")


def test_subject_counts_papers_and_shortens_the_first_title() -> None:
    long_title = "A very long title about " + "many things " * 20
    msg = render_digest(digest(paper(1, title=long_title), paper(2)), sender=SENDER, base_url=None)

    subject = msg["Subject"]
    assert subject.startswith("paperwire: 2 new papers for you — A very long title about")
    assert subject.endswith("…")
    assert len(subject) < 120


def test_message_id_is_derived_from_the_digest_key() -> None:
    first = render_digest(digest(key="k-1"), sender=SENDER, base_url=None)
    again = render_digest(digest(key="k-1"), sender=SENDER, base_url=None)
    other = render_digest(digest(key="k-2"), sender=SENDER, base_url=None)

    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != other["Message-ID"]
    assert first["Message-ID"].endswith("@paperwire>")


def test_base_url_appears_in_both_parts_when_given() -> None:
    text, html = parts(
        render_digest(digest(), sender=SENDER, base_url="https://paperwire.example/")
    )

    assert "https://paperwire.example" in text
    assert 'href="https://paperwire.example"' in html


def test_html_loads_no_external_assets() -> None:
    _, html = parts(render_digest(digest(), sender=SENDER, base_url=None))

    assert "<img" not in html and "<link" not in html and "<script" not in html


@pytest.mark.parametrize(
    "email", ["reader@example.org\r\nBcc: victim@example.com", "a@example.org, b@example.org", ""]
)
def test_a_recipient_that_is_not_one_address_is_refused(email: str) -> None:
    bad = digest().model_copy(update={"email": email})

    with pytest.raises(InvalidRecipient) as err:
        render_digest(bad, sender=SENDER, base_url=None)
    assert "example.org" not in str(err.value)


# Signed links, one-click unsubscribe, CSS inlining, the per-user cap

KEY = "k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
BASE = "https://paperwire.example.org"


def linked(*papers: RankedPaper, max_papers: int = 50) -> EmailMessage:
    return render_digest(
        digest(*papers),
        sender=SENDER,
        base_url=BASE,
        signer=LinkSigner([KEY]),
        max_papers=max_papers,
    )


def test_each_paper_has_four_feedback_links_that_verify_to_their_action() -> None:
    _, html = parts(linked(paper(1)))

    tokens = re.findall(rf'href="{BASE}/feedback/([^"]+)"', html)
    actions = [LinkSigner([KEY]).verify("feedback", t) for t in tokens]

    assert [(a.data["k"], a.data.get("r")) for a in actions] == [
        ("like", None),
        ("dislike", None),
        ("dislike", "off-topic"),
        ("dislike", "low quality"),
    ]
    assert {a.data["p"] for a in actions} == {"arxiv:2611.00001"}
    assert {a.user_id for a in actions} == {"user-1"}
    assert len({a.token_id for a in actions}) == 4  # each acts once
    for label in ("👍 More like this", "👎 Less like this", "off-topic", "low quality"):
        assert label in html


def test_no_link_carries_the_email_address() -> None:
    text, html = parts(linked(paper(1)))

    for url in re.findall(r"https?://\S+", text) + re.findall(r'href="([^"]+)"', html):
        assert "reader" not in url and "%40" not in url and "@" not in url


def test_one_click_unsubscribe_headers_survive_the_wire_unfolded() -> None:
    msg = reparsed(linked(paper(1)))

    header = msg["List-Unsubscribe"]
    assert header.startswith(f"<{BASE}/unsubscribe/") and header.endswith(">")
    token = header[len(f"<{BASE}/unsubscribe/") : -1]
    assert LinkSigner([KEY]).verify("unsubscribe", token).user_id == "user-1"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    wire = linked(paper(1)).as_string()
    [line] = [line for line in wire.splitlines() if line.startswith("List-Unsubscribe:")]
    assert "=?utf-8?" not in line  # a folded long URL would be RFC 2047-encoded


def test_without_a_base_url_there_are_no_links_back_and_no_unsubscribe_header() -> None:
    msg = render_digest(digest(), sender=SENDER, base_url=None, signer=LinkSigner([KEY]))

    assert msg["List-Unsubscribe"] is None
    assert "/feedback/" not in parts(msg)[1]


def test_css_is_inlined_on_the_elements() -> None:
    _, html = parts(linked(paper(1)))

    assert re.search(r'<h2 style="[^"]*font-size: 17px', html)
    assert re.search(r'<p class="why" style="[^"]*color: #57606a', html)
    # Only the @media rules stay in a <style> block.
    for block in re.findall(r"<style>(.*?)</style>", html, re.S):
        assert block.strip().startswith("@media")


def test_an_email_lists_at_most_max_papers() -> None:
    text, html = parts(linked(*(paper(n) for n in range(1, 8)), max_papers=3))

    assert "Sparse attention, part 3" in html and "Sparse attention, part 4" not in html
    assert "Sparse attention, part 4" not in text


def test_hostile_fields_stay_text_in_both_parts_and_links() -> None:
    evil = paper(
        1,
        title='"><img src=x onerror=alert(1)>\r\nBcc: victim@example.com',
        authors=("<a href='javascript:x'>Mallory</a>",),
        abstract="</p><script>steal()</script>",
        reason='" onmouseover="alert(1)',
    )
    msg = linked(evil)
    _, html = parts(msg)

    tags = Tags()
    tags.feed(html)
    assert not {"img", "script"} & {tag for tag, _ in tags.found}
    for _, attrs in tags.found:
        assert not any(name.startswith("on") for name, _ in attrs)
        assert not any((value or "").startswith("javascript:") for _, value in attrs)
    assert reparsed(msg)["Bcc"] is None


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))
