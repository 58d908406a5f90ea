"""render_digest: both parts, every paper's fields, escaping, safe headers, stable Message-ID."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from paperwire_notify.render import InvalidRecipient, render_digest, shorten, shorten_authors
from paperwire_shared.events import DigestDue, RankedPaper

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
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; friends" in html
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
