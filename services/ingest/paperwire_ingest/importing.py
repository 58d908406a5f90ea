"""Importing paper files: read and parse each, drop papers already seen, publish the rest.

Used by ``paperwire ingest FILE`` (``import_files``) and by the inbox poller (``import_file``). A
file is read in chunks off the event loop, so a 75,000-paper file neither blocks the service nor
sits in memory whole.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import gzip
import itertools
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from faststream.redis import RedisBroker

from paperwire_ingest.parsing import (
    SOURCES,
    Format,
    LineError,
    ParsedLine,
    detect_format,
    parse_lines,
)
from paperwire_ingest.seen import RedisSeenPapers, SeenPapers
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED, ensure_groups

log = logging.getLogger(__name__)

# Papers claimed and published per round: one claim script call each (~0.2 ms of Redis time).
CHUNK = 256
# Publishes in flight at once: ~5,000/s awaited one by one (STACK-NOTES.md); concurrency lifts it
# without opening one pooled Redis connection per paper.
PUBLISH_CONCURRENCY = 32
# Enough to see past header lines, and short enough to read twice.
_SNIFF_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class IngestError(Exception):
    """A file that cannot be imported at all: missing, unreadable, or in no format we know."""


@dataclass
class ImportReport:
    """What one import did; ``errors`` are the lines skipped, in file order."""

    path: Path
    source: str
    published: int = 0
    duplicates: int = 0
    errors: list[LineError] = field(default_factory=list)


Progress = Callable[[ImportReport], None]
# The parsed lines of an open file; closing it closes the file.
Lines = Generator[ParsedLine, None, None]


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def _sniff(stream: BinaryIO, path: Path) -> Format:
    try:
        head = stream.read(_SNIFF_BYTES)
        stream.seek(0)
    except (OSError, EOFError) as exc:
        raise IngestError(f"{path}: cannot read ({exc})") from None
    if b"\x00" in head:
        raise IngestError(f"{path}: a binary file, not JSON Lines or a saved papers page")
    try:
        # Not final: the head may end inside a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if text.lstrip("\ufeff \t\r\n")[:1] == "[":
        raise IngestError(f"{path}: a JSON array; write one JSON object per line (JSON Lines)")
    fmt = detect_format(path.name, text)
    if fmt is None:
        raise IngestError(
            f"{path}: unknown format: expected JSON Lines (one JSON object per line, "
            ".jsonl) or a saved Hugging Face papers page (.txt)"
        )
    return fmt


def open_papers(path: Path, *, now: datetime) -> tuple[Format, Lines]:
    """The format of ``path`` and a lazy stream of its parsed lines; raises ``IngestError``.

    Plain or gzip-compressed. Lines are split on LF only (CRLF works; a stray CR inside a line is
    whitespace), and an undecodable byte becomes U+FFFD rather than failing the whole line.
    """
    try:
        stream = _open(path)
    except FileNotFoundError:
        raise IngestError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IngestError(f"{path}: a directory, not a file") from None
    except OSError as exc:
        raise IngestError(f"{path}: cannot open ({exc.strerror or exc})") from None
    try:
        fmt = _sniff(stream, path)
    except BaseException:
        stream.close()
        raise
    text_lines = (raw.decode("utf-8", errors="replace") for raw in stream)
    return fmt, _closing(parse_lines(fmt, text_lines, now=now), stream)


def _closing(items: Iterator[ParsedLine], stream: BinaryIO) -> Lines:
    with stream:
        yield from items


def _take(items: Iterator[ParsedLine], n: int, path: Path) -> list[ParsedLine]:
    try:
        return list(itertools.islice(items, n))
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip shows up mid-file
        raise IngestError(f"{path}: read failed part-way ({exc})") from None


async def publish_papers(broker: RedisBroker, papers: Sequence[PaperIngested]) -> None:
    """Publish ``papers`` to PAPERS_INGESTED, several at a time.

    Two versions of one paper never share a round, so the newer one is always published later.
    """
    round_: list[PaperIngested] = []
    for paper in papers:
        if len(round_) == PUBLISH_CONCURRENCY or any(p.paper_id == paper.paper_id for p in round_):
            await _publish_round(broker, round_)
            round_ = []
        round_.append(paper)
    if round_:
        await _publish_round(broker, round_)


async def _publish_round(broker: RedisBroker, papers: Sequence[PaperIngested]) -> None:
    tasks = [asyncio.ensure_future(broker.publish(p, stream=PAPERS_INGESTED)) for p in papers]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def publish_unseen(
    broker: RedisBroker, seen: SeenPapers, papers: Sequence[PaperIngested]
) -> list[PaperIngested]:
    """Claim ``papers`` in the seen memory and publish those claimed; returns what was published.

    If publishing fails they are unclaimed, so the next attempt publishes them; some may already
    be out, and will then go out twice: harmless, events are idempotent.
    """
    fresh = await seen.claim(papers)
    try:
        await publish_papers(broker, fresh)
    except BaseException:
        await _forget_quietly(seen, fresh)
        raise
    return fresh


async def import_file(
    path: Path,
    broker: RedisBroker,
    seen: SeenPapers,
    *,
    now: datetime,
    progress: Progress | None = None,
) -> ImportReport:
    """Import one file; raises ``IngestError`` when the file cannot be read at all.

    ``broker`` must be connected. Bad lines are skipped and reported; papers already seen (in
    earlier imports or earlier in this file) are counted as duplicates. ``progress`` is called
    with the running report after each chunk.
    """
    fmt, items = await asyncio.to_thread(open_papers, path, now=now)
    report = ImportReport(path=path, source=SOURCES[fmt])
    try:
        while chunk := await asyncio.to_thread(_take, items, CHUNK, path):
            papers = [item for item in chunk if isinstance(item, PaperIngested)]
            report.errors.extend(item for item in chunk if isinstance(item, LineError))
            fresh = await publish_unseen(broker, seen, papers)
            report.published += len(fresh)
            report.duplicates += len(papers) - len(fresh)
            if progress is not None:
                progress(report)
    finally:
        # After a cancel the worker thread may still be inside the generator ("already
        # executing"); it then closes the file itself when it is collected.
        with contextlib.suppress(ValueError):
            items.close()
    return report


async def import_files(
    paths: Sequence[Path],
    redis_url: str,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> list[ImportReport]:
    """``paperwire ingest FILE...``: import each file in turn over its own connections.

    Every file is opened and its format checked first, so a wrong path fails before anything is
    published (``IngestError``). ``now`` defaults to the time each file starts.
    """
    for path in paths:
        _, items = await asyncio.to_thread(open_papers, path, now=now or datetime.now(UTC))
        items.close()
    # Groups at 0 before the first event, so an embed worker started later reads everything.
    await ensure_groups(redis_url)
    seen = RedisSeenPapers.from_url(redis_url)
    try:
        async with RedisBroker(redis_url) as broker:
            return [
                await import_file(
                    path, broker, seen, now=now or datetime.now(UTC), progress=progress
                )
                for path in paths
            ]
    finally:
        await seen.aclose()


async def _forget_quietly(seen: SeenPapers, papers: Sequence[PaperIngested]) -> None:
    try:
        await seen.forget(papers)
    except Exception:
        # Redis is likely what failed the publish; the original error is the one to raise.
        log.warning("could not unclaim %d papers after a failed publish", len(papers))
