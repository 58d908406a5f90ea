"""ingest's pure parsing: text clean-up, arXiv ids, stable ids, JSON Lines and the saved HF page."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from paperwire_ingest.parsing import (
    MAX_ABSTRACT,
    LineError,
    ParsedLine,
    detect_format,
    normalise_text,
    parse_arxiv_id,
    parse_hf_page,
    parse_jsonl,
    stable_id,
)
from paperwire_shared.events import PaperIngested

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def papers(items: list[ParsedLine]) -> list[PaperIngested]:
    return [item for item in items if isinstance(item, PaperIngested)]


def errors(items: list[ParsedLine]) -> list[LineError]:
    return [item for item in items if isinstance(item, LineError)]


def jsonl(*records: object) -> list[str]:
    return [json.dumps(record) + "\n" for record in records]


# The saved Hugging Face papers page


def test_whole_hf_page_parses_to_237_papers_without_the_subscribe_prefix(shared_dir: Path) -> None:
    text = (shared_dir / "seed" / "hf-papers-page.txt").read_text()
    items = list(parse_hf_page(text.splitlines(keepends=True), now=NOW))

    assert errors(items) == []
    found = papers(items)
    assert len(found) == 237
    assert found[0].title.startswith("Extended Linear Regression: A Kalman Filter Approach")
    assert not any(p.title.startswith("Subscribe") for p in found)
    assert not any(p.title.startswith("Get trending papers") for p in found)
    assert all(p.abstract and p.source == "hf-page" and p.ingested_at == NOW for p in found)
    assert len({p.paper_id for p in found}) == 237


def test_hf_page_survives_crlf_blank_lines_and_a_missing_final_newline() -> None:
    text = (
        "Get trending papers in your email inbox once a day!\r\n"
        "Get trending papers in your email inbox!\r\n"
        "\r\n"
        "SubscribeFirst Title\r\n"
        "First abstract.\r\n"
        "\r\n"
        "   \r\n"
        "Second Title\r\n"
        "Second abstract."
    )
    found = papers(list(parse_hf_page(text.split("\n"), now=NOW)))

    assert [(p.title, p.abstract) for p in found] == [
        ("First Title", "First abstract."),
        ("Second Title", "Second abstract."),
    ]


def test_subscribe_on_a_line_of_its_own_is_a_header_too() -> None:
    lines = ["Get trending papers in your email inbox!", "Subscribe", "A Title", "An abstract."]
    found = papers(list(parse_hf_page(lines, now=NOW)))

    assert [p.title for p in found] == ["A Title"]


def test_a_first_title_starting_with_subscriber_keeps_its_first_word() -> None:
    lines = ["Subscriber Churn Prediction at Scale", "We predict churn."]
    found = papers(list(parse_hf_page(lines, now=NOW)))

    assert [p.title for p in found] == ["Subscriber Churn Prediction at Scale"]


def test_a_title_left_without_an_abstract_is_reported_with_its_line_number() -> None:
    lines = ["Title One", "Abstract one.", "", "Title Two"]
    items = list(parse_hf_page(lines, now=NOW))

    assert [p.title for p in papers(items)] == ["Title One"]
    assert [e.line_no for e in errors(items)] == [4]


# JSON Lines


def test_first_50_citeulike_papers_parse(shared_dir: Path) -> None:
    path = shared_dir / "data" / "citeulike-a" / "papers.jsonl"
    with path.open() as f:
        items = list(parse_jsonl(itertools.islice(f, 50), now=NOW))

    assert errors(items) == []
    found = papers(items)
    assert len(found) == 50
    # CiteULike ids are kept as they are: interactions.csv refers to them.
    assert found[0].paper_id == "0"
    assert all(p.source == "file" and p.title for p in found)


def test_first_50_arxiv_papers_parse_with_ids_dates_and_urls(shared_dir: Path) -> None:
    with gzip.open(shared_dir / "data" / "arxiv-cs-2025.jsonl.gz", "rt") as f:
        lines = list(itertools.islice(f, 50))
    items = list(parse_jsonl(lines, now=NOW))

    assert errors(items) == []
    found = papers(items)
    assert len(found) == 50
    first = found[0]
    assert first.paper_id == "2503.11731"
    assert first.url == "https://arxiv.org/abs/2503.11731"
    assert first.published == date(2025, 3, 18)
    assert first.categories == ("cs.CV", "cs.RO")
    assert first.version == 1


def test_title_with_crlf_and_a_header_becomes_one_line() -> None:
    lines = jsonl({"id": "x1", "title": "Hello\r\nBcc: x", "abstract": "a\n\tb"})
    (paper,) = papers(list(parse_jsonl(lines, now=NOW)))

    assert paper.title == "Hello Bcc: x"
    assert paper.abstract == "a b"


def test_arxiv_id_with_version_is_split_and_url_defaults_to_the_abstract_page() -> None:
    lines = jsonl({"id": "arXiv:2503.11731v3", "title": "T", "abstract": ""})
    (paper,) = papers(list(parse_jsonl(lines, now=NOW)))

    assert (paper.paper_id, paper.version) == ("2503.11731", 3)
    assert paper.url == "https://arxiv.org/abs/2503.11731"


def test_record_without_id_takes_the_arxiv_id_of_its_url() -> None:
    lines = jsonl({"title": "T", "abstract": "", "url": "https://arxiv.org/pdf/2503.11731v2"})
    (paper,) = papers(list(parse_jsonl(lines, now=NOW)))

    assert (paper.paper_id, paper.version) == ("2503.11731", 2)
    assert paper.url == "https://arxiv.org/pdf/2503.11731v2"


def test_record_without_any_id_gets_the_same_title_id_however_spaced_or_cased() -> None:
    lines = jsonl({"title": "Attention  Is All\nYou Need"}, {"title": "attention is all you need"})
    first, second = papers(list(parse_jsonl(lines, now=NOW)))

    assert first.paper_id == second.paper_id == stable_id("Attention Is All You Need")
    assert first.paper_id.startswith("title-")
    assert len(first.paper_id) == len("title-") + 16


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "1", "abstract": "no title"}', "title: required field missing"),
        ('{"id": 7, "title": "T"}', "id: Input should be a valid string"),
        ('{"title": "T", "authors": "A. Author"}', "authors: Input should be a valid array"),
        ('{"title": "T", "published": "2025-13-01"}', "published: Input should be a valid date"),
        ('{"title": "T", "published": 20250301}', "published: Input should be a valid date"),
        ('{"title": "T", "abstract": "cut', "invalid JSON: "),
        ('["T"]', "expected a JSON object"),
        ('{"title": "  \\r\\n "}', "title: empty"),
    ],
)
def test_a_bad_line_becomes_an_error_with_a_clear_reason(line: str, reason: str) -> None:
    items = list(parse_jsonl(['{"title": "fine"}', line], now=NOW))

    assert len(papers(items)) == 1
    (error,) = errors(items)
    assert error.line_no == 2
    assert error.reason.startswith(reason)
    assert str(error).startswith("line 2: ")


def test_blank_lines_a_bom_and_crlf_are_fine_in_json_lines() -> None:
    lines = ['\ufeff{"title": "One"}\r\n', "\r\n", "   \n", '{"title": "Two"}']
    items = list(parse_jsonl(lines, now=NOW))

    assert [p.title for p in papers(items)] == ["One", "Two"]
    assert errors(items) == []


def test_unknown_fields_are_ignored_and_known_optional_ones_kept() -> None:
    record = {
        "id": "p-1",
        "title": "T",
        "abstract": None,
        "authors": [" Ada  Lovelace ", ""],
        "categories": ["cs.LG"],
        "popularity": 12,
        "version": 2,
        "comment": "ignored",
    }
    (paper,) = papers(list(parse_jsonl(jsonl(record), now=NOW)))

    assert paper.paper_id == "p-1"
    assert paper.abstract == ""
    assert paper.authors == ("Ada Lovelace",)
    assert paper.popularity == 12
    assert paper.version == 2
    assert paper.url is None


def test_an_abstract_longer_than_the_event_allows_is_cut_at_a_space() -> None:
    words = "word " * (MAX_ABSTRACT // 5 + 100)
    (paper,) = papers(list(parse_jsonl(jsonl({"title": "T", "abstract": words}), now=NOW)))

    assert len(paper.abstract) <= MAX_ABSTRACT
    assert paper.abstract.endswith("word")


# Text and ids


def test_normalise_text_collapses_whitespace_composes_unicode_and_keeps_latex() -> None:
    assert normalise_text(" Cafe\u0301 \u00a0 $\\alpha$\r\n\tx\x00y ") == "Café $\\alpha$ x y"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2503.11731", ("2503.11731", None)),
        ("2503.11731v2", ("2503.11731", 2)),
        ("arXiv:2503.11731v2", ("2503.11731", 2)),
        ("0704.0001", ("0704.0001", None)),
        ("hep-th/9901001v1", ("hep-th/9901001", 1)),
        ("math.GT/0309136", ("math/0309136", None)),
        ("https://arxiv.org/abs/2503.11731v2", ("2503.11731", 2)),
        ("http://arxiv.org/pdf/2503.11731v2.pdf", ("2503.11731", 2)),
        ("https://export.arxiv.org/abs/hep-th/9901001", ("hep-th/9901001", None)),
    ],
)
def test_arxiv_ids_are_recognised_in_every_form(
    text: str, expected: tuple[str, int | None]
) -> None:
    assert parse_arxiv_id(text) == expected


@pytest.mark.parametrize(
    "text",
    ["0", "2503.1173", "1501.1234", "2503.11731v0", "see 2503.11731", "https://x.org/2503.11731"],
)
def test_other_text_is_not_an_arxiv_id(text: str) -> None:
    assert parse_arxiv_id(text) is None


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("papers.jsonl", "", "jsonl"),
        ("papers.jsonl.gz", "garbage", "jsonl"),
        ("export", '  {"title": "T"}\n', "jsonl"),
        ("page.txt", "Some Title\nIts abstract\n", "hf-page"),
        ("saved", "Get trending papers in your email inbox once a day!\n", "hf-page"),
        ("saved", "SubscribeA Title\nIts abstract\n", "hf-page"),
        ("notes.md", "# my notes\n", None),
    ],
)
def test_format_is_told_by_suffix_or_first_line(name: str, head: str, expected: str | None) -> None:
    assert detect_format(name, head) == expected
