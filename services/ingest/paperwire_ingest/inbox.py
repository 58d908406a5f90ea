"""The inbox folder: paper files dropped in data_dir/inbox are imported, then moved out of the way.

A file goes to ``done/`` once imported (with ``<name>.errors.txt`` beside it if some lines were
skipped), to ``failed/`` with ``<name>.error.txt`` when nothing in it could be imported, and stays
where it is when Redis failed, to be tried again on the next poll. One poller per inbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redis.exceptions import RedisError

from paperwire_ingest.importing import ImportReport, IngestError
from paperwire_shared.service import stop_task

log = logging.getLogger(__name__)

Outcome = Literal["done", "failed", "retry"]
Importer = Callable[[Path], Awaitable[ImportReport]]

DONE = "done"
FAILED = "failed"
# Names that editors and downloaders use while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp")
# An error file lists at most this many bad lines.
_MAX_LISTED = 1_000


@dataclass(frozen=True)
class InboxResult:
    """What became of one file: ``path`` is where it is now."""

    path: Path
    outcome: Outcome
    report: ImportReport | None = None
    message: str = ""


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>-2.<suffixes>`` and so on when that is taken."""
    target = folder / name
    stem, dot, suffixes = name.partition(".")
    n = 2
    while target.exists() or target.with_name(target.name + ".error.txt").exists():
        target = folder / f"{stem}-{n}{dot}{suffixes}"
        n += 1
    return target


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, path.name)
    path.rename(target)
    return target


def _listing(report: ImportReport) -> str:
    lines = [str(error) for error in report.errors[:_MAX_LISTED]]
    if len(report.errors) > _MAX_LISTED:
        lines.append(f"... and {len(report.errors) - _MAX_LISTED} more bad lines")
    return "\n".join(lines) + "\n"


class InboxPoller:
    """Imports the files of ``inbox`` every ``poll_seconds``: a background task of the service."""

    def __init__(
        self,
        inbox: Path,
        importer: Importer,
        *,
        poll_seconds: float,
        on_result: Callable[[InboxResult], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.poll_seconds = poll_seconds
        self._import = importer
        self._on_result = on_result
        # (size, mtime) of each file at the last poll: a file is imported only once it has
        # stopped changing, so one still being copied in is never imported half-written.
        self._last_seen: dict[Path, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def _scan(self) -> list[Path]:
        self.inbox.mkdir(parents=True, exist_ok=True)
        current = {}
        for entry in self.inbox.iterdir():
            if entry.name.startswith(".") or entry.name.endswith(_PARTIAL_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:  # removed or renamed while we looked
                continue
            current[entry] = (stat.st_size, stat.st_mtime_ns)
        settled = sorted(path for path, sig in current.items() if self._last_seen.get(path) == sig)
        self._last_seen = current
        return settled

    async def poll_once(self) -> list[InboxResult]:
        """Import every file that looked the same at the previous poll; what became of each."""
        results = []
        for path in await asyncio.to_thread(self._scan):
            result = await self._handle(path)
            if self._on_result is not None:
                self._on_result(result)
            results.append(result)
        return results

    async def _handle(self, path: Path) -> InboxResult:
        try:
            report = await self._import(path)
        except IngestError as exc:
            return await self._fail(path, str(exc))
        except (RedisError, OSError) as exc:
            log.warning("importing %s failed (%s): will try again next poll", path.name, exc)
            return InboxResult(path, "retry", message=str(exc))
        except Exception as exc:
            # A bug must not take the service down, nor make it retry the same file forever.
            log.exception("importing %s failed unexpectedly", path.name)
            return await self._fail(path, f"unexpected error: {exc!r}")
        if report.errors and not report.published and not report.duplicates:
            return await self._fail(path, "no line could be imported:\n" + _listing(report), report)
        target = await asyncio.to_thread(_move, path, self.inbox / DONE)
        if report.errors:
            errors_file = target.with_name(target.name + ".errors.txt")
            await asyncio.to_thread(errors_file.write_text, _listing(report))
        log.info(
            "imported %s: %d published, %d duplicates, %d bad lines",
            path.name,
            report.published,
            report.duplicates,
            len(report.errors),
        )
        return InboxResult(target, "done", report)

    async def _fail(
        self, path: Path, message: str, report: ImportReport | None = None
    ) -> InboxResult:
        log.warning("could not import %s: %s", path.name, message.splitlines()[0])
        target = await asyncio.to_thread(_move, path, self.inbox / FAILED)
        error_file = target.with_name(target.name + ".error.txt")
        await asyncio.to_thread(error_file.write_text, message.rstrip("\n") + "\n")
        return InboxResult(target, "failed", report, message)

    async def run(self) -> None:
        """Poll until cancelled; nothing a file does stops the loop."""
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("inbox poll failed")
            await asyncio.sleep(self.poll_seconds)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self.run(), name="ingest-inbox-poller")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
