"""import_file in memory: TestRedisBroker for the stream, MemorySeenPapers for the seen memory."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faststream.redis import RedisBroker, TestRedisBroker
from redis.exceptions import ConnectionError as RedisConnectionError

from paperwire.stack import free_port
from paperwire_ingest.importing import ImportReport, IngestError, import_file
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class Stream:
    """What was published to PAPERS_INGESTED, and the in-memory broker it was published on."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.papers: list[PaperIngested] = []


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    broker = RedisBroker()
    received = Stream(broker)

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        received.papers.append(paper)

    async with TestRedisBroker(broker) as test_broker:
        received.broker = test_broker
        yield received


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def arxiv(n: int, *, version: int = 1, abstract: str = "An abstract.") -> dict[str, object]:
    return {"id": f"2503.{11700 + n}v{version}", "title": f"Paper {n}", "abstract": abstract}


async def test_a_bad_line_in_the_middle_is_reported_by_number_and_the_rest_published(
    tmp_path: Path, stream: Stream
) -> None:
    path = tmp_path / "papers.jsonl"
    lines = [json.dumps(arxiv(n)) for n in range(5)]
    lines.insert(2, '{"id": "2503.99999", "abstract": "title is missing"}')
    path.write_text("\n".join(lines))

    report = await import_file(path, stream.broker, MemorySeenPapers(), now=NOW)

    assert report.published == 5
    assert [(e.line_no, e.reason) for e in report.errors] == [(3, "title: required field missing")]
    assert [p.paper_id for p in stream.papers] == [f"2503.{11700 + n}" for n in range(5)]
    assert all(p.ingested_at == NOW for p in stream.papers)


async def test_the_same_file_imported_twice_publishes_nothing_the_second_time(
    tmp_path: Path, stream: Stream
) -> None:
    path = write_jsonl(tmp_path / "papers.jsonl", [arxiv(n) for n in range(10)])
    seen = MemorySeenPapers()

    first = await import_file(path, stream.broker, seen, now=NOW)
    second = await import_file(path, stream.broker, seen, now=NOW)

    assert (first.published, first.duplicates) == (10, 0)
    assert (second.published, second.duplicates) == (0, 10)
    assert len(stream.papers) == 10


async def test_a_new_version_with_a_changed_abstract_is_published_again_under_the_same_id(
    tmp_path: Path, stream: Stream
) -> None:
    seen = MemorySeenPapers()
    v1 = write_jsonl(tmp_path / "v1.jsonl", [arxiv(1, version=1, abstract="First take.")])
    v2 = write_jsonl(tmp_path / "v2.jsonl", [arxiv(1, version=2, abstract="Second take.")])

    await import_file(v1, stream.broker, seen, now=NOW)
    report = await import_file(v2, stream.broker, seen, now=NOW)

    assert report.published == 1
    assert [(p.paper_id, p.version, p.abstract) for p in stream.papers] == [
        ("2503.11701", 1, "First take."),
        ("2503.11701", 2, "Second take."),
    ]
    assert stream.papers[0].content_hash != stream.papers[1].content_hash


async def test_an_older_version_imported_after_a_newer_one_is_not_published_again(
    tmp_path: Path, stream: Stream
) -> None:
    seen = MemorySeenPapers()
    v2 = write_jsonl(tmp_path / "v2.jsonl", [arxiv(1, version=2, abstract="Second take.")])
    v1 = write_jsonl(tmp_path / "v1.jsonl", [arxiv(1, version=1, abstract="First take.")])

    await import_file(v2, stream.broker, seen, now=NOW)
    report = await import_file(v1, stream.broker, seen, now=NOW)

    assert (report.published, report.duplicates) == (0, 1)
    assert [p.version for p in stream.papers] == [2]


async def test_duplicates_inside_one_file_are_dropped_and_the_first_occurrence_wins(
    tmp_path: Path, stream: Stream
) -> None:
    records = [
        {"id": "2503.11701v1", "title": "Paper", "abstract": "Same text.", "categories": ["a"]},
        {"id": "2503.11701", "title": "Paper", "abstract": "Same text.", "categories": ["b"]},
        {"title": "No id", "abstract": "x"},
        {"title": "No \n id", "abstract": " x"},
    ]
    path = write_jsonl(tmp_path / "papers.jsonl", records)

    report = await import_file(path, stream.broker, MemorySeenPapers(), now=NOW)

    assert (report.published, report.duplicates) == (2, 2)
    assert [p.categories for p in stream.papers] == [("a",), ()]


async def test_two_versions_in_one_file_are_published_in_file_order(
    tmp_path: Path, stream: Stream
) -> None:
    # Enough papers around them that they would share a round of concurrent publishes.
    records = [arxiv(1, version=1, abstract="old"), *[arxiv(n) for n in range(2, 6)]]
    records.append(arxiv(1, version=2, abstract="new"))
    path = write_jsonl(tmp_path / "papers.jsonl", records)

    await import_file(path, stream.broker, MemorySeenPapers(), now=NOW)

    versions = [p.abstract for p in stream.papers if p.paper_id == "2503.11701"]
    assert versions == ["old", "new"]


async def test_the_whole_hf_page_is_imported(shared_dir: Path, stream: Stream) -> None:
    page = shared_dir / "seed" / "hf-papers-page.txt"

    report = await import_file(page, stream.broker, MemorySeenPapers(), now=NOW)

    assert (report.source, report.published, report.errors) == ("hf-page", 237, [])
    assert len(stream.papers) == 237


async def test_a_gzip_compressed_file_with_crlf_lines_is_imported(
    tmp_path: Path, stream: Stream
) -> None:
    path = tmp_path / "papers.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"title": "One"}\r\n{"title": "Two"}'))

    report = await import_file(path, stream.broker, MemorySeenPapers(), now=NOW)

    assert report.published == 2
    assert [p.title for p in stream.papers] == ["One", "Two"]


async def test_a_file_larger_than_one_chunk_is_published_whole_and_progress_is_reported(
    tmp_path: Path, stream: Stream
) -> None:
    path = write_jsonl(tmp_path / "papers.jsonl", [{"title": f"Paper {n}"} for n in range(600)])
    seen_progress: list[int] = []

    def progress(report: ImportReport) -> None:
        seen_progress.append(report.published)

    report = await import_file(path, stream.broker, MemorySeenPapers(), now=NOW, progress=progress)

    assert report.published == 600
    assert len({p.paper_id for p in stream.papers}) == 600
    assert seen_progress == sorted(seen_progress)
    assert len(seen_progress) > 1
    assert seen_progress[-1] == 600


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.jsonl", None, "no such file"),
        ("notes.md", b"# Notes\nnot papers\n", "unknown format"),
        ("blob.bin", b"\x89PNG\r\n\x1a\n\x00\x00", "binary file"),
        ("latin1.txt", "Caf\xe9 au lait\n".encode("latin-1"), "not UTF-8"),
        ("array.json", b'[{"title": "T"}]', "JSON array"),
        ("cut.jsonl.gz", gzip.compress(b'{"title": "T"}\n' * 100)[:-12], "cannot read"),
    ],
)
async def test_a_file_that_cannot_be_imported_raises_a_clear_ingest_error(
    tmp_path: Path, stream: Stream, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(IngestError, match=message) as caught:
        await import_file(path, stream.broker, MemorySeenPapers(), now=NOW)

    assert str(path) in str(caught.value)
    assert stream.papers == []


async def test_a_failed_publish_leaves_the_papers_unclaimed_so_the_next_import_sends_them(
    tmp_path: Path, stream: Stream
) -> None:
    path = write_jsonl(tmp_path / "papers.jsonl", [arxiv(n) for n in range(3)])
    seen = MemorySeenPapers()

    # Nothing listens on this port: redis-py connects lazily, so the publish is what fails.
    async with RedisBroker(f"redis://127.0.0.1:{free_port()}/0") as down:
        with pytest.raises(RedisConnectionError):
            await import_file(path, down, seen, now=NOW)
    report = await import_file(path, stream.broker, seen, now=NOW)

    assert report.published == 3
    assert len(stream.papers) == 3
