"""The inbox poller and the ingest app around it, in memory (TestRedisBroker, MemorySeenPapers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from faststream import TestApp
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire.stack import free_port
from paperwire_ingest.app import create_app
from paperwire_ingest.config import Settings
from paperwire_ingest.importing import ImportReport, import_file
from paperwire_ingest.inbox import InboxPoller
from paperwire_ingest.seen import MemorySeenPapers
from paperwire_shared.events import PaperIngested
from paperwire_shared.streams import PAPERS_INGESTED

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class Inbox:
    def __init__(self, root: Path, broker: RedisBroker) -> None:
        self.dir = root / "inbox"
        self.broker = broker
        self.seen = MemorySeenPapers()
        self.papers: list[PaperIngested] = []

    async def importer(self, path: Path) -> ImportReport:
        return await import_file(path, self.broker, self.seen, now=NOW)

    def poller(self) -> InboxPoller:
        return InboxPoller(self.dir, self.importer, poll_seconds=0.01)

    def drop(self, name: str, text: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        path.write_text(text)
        return path


def collecting_broker(papers: list[PaperIngested]) -> RedisBroker:
    broker = RedisBroker()

    @broker.subscriber(stream=PAPERS_INGESTED)
    async def collect(paper: PaperIngested) -> None:
        papers.append(paper)

    return broker


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    papers: list[PaperIngested] = []
    async with TestRedisBroker(collecting_broker(papers)) as broker:
        box = Inbox(tmp_path, broker)
        box.papers = papers
        yield box


def jsonl(*titles: str) -> str:
    return "".join(json.dumps({"title": t, "abstract": f"About {t}."}) + "\n" for t in titles)


async def test_a_dropped_file_is_imported_once_it_has_settled_and_moved_to_done(
    inbox: Inbox,
) -> None:
    inbox.drop("papers.jsonl", jsonl("One", "Two"))
    poller = inbox.poller()

    first = await poller.poll_once()  # first sight: it may still be being written
    second = await poller.poll_once()

    assert first == []
    (result,) = second
    assert result.outcome == "done"
    assert result.path == inbox.dir / "done" / "papers.jsonl"
    assert result.path.exists()
    assert not (inbox.dir / "papers.jsonl").exists()
    assert [p.title for p in inbox.papers] == ["One", "Two"]


async def test_a_file_still_growing_waits_for_the_next_poll(inbox: Inbox) -> None:
    path = inbox.drop("papers.jsonl", jsonl("One"))
    poller = inbox.poller()
    await poller.poll_once()

    with path.open("a") as f:
        f.write(jsonl("Two"))
    assert await poller.poll_once() == []
    (result,) = await poller.poll_once()

    assert result.outcome == "done"
    assert [p.title for p in inbox.papers] == ["One", "Two"]


async def test_hidden_and_partial_files_are_left_alone(inbox: Inbox) -> None:
    inbox.drop(".papers.jsonl", jsonl("One"))
    inbox.drop("papers.jsonl.part", jsonl("Two"))
    poller = inbox.poller()

    await poller.poll_once()
    assert await poller.poll_once() == []
    assert inbox.papers == []


async def test_a_file_in_no_known_format_goes_to_failed_with_the_reason_beside_it(
    inbox: Inbox,
) -> None:
    inbox.drop("notes.md", "# not papers\n")
    poller = inbox.poller()

    await poller.poll_once()
    (result,) = await poller.poll_once()

    assert result.outcome == "failed"
    assert result.path == inbox.dir / "failed" / "notes.md"
    assert "unknown format" in (inbox.dir / "failed" / "notes.md.error.txt").read_text()


async def test_a_file_where_every_line_is_bad_goes_to_failed_listing_the_lines(
    inbox: Inbox,
) -> None:
    inbox.drop("bad.jsonl", '{"abstract": "no title"}\nnot json\n')
    poller = inbox.poller()

    await poller.poll_once()
    (result,) = await poller.poll_once()

    assert result.outcome == "failed"
    error_text = (inbox.dir / "failed" / "bad.jsonl.error.txt").read_text()
    assert "line 1: title: required field missing" in error_text
    assert "line 2: invalid JSON" in error_text


async def test_a_partly_bad_file_goes_to_done_with_its_bad_lines_listed(inbox: Inbox) -> None:
    inbox.drop("mixed.jsonl", jsonl("One") + "{oops\n" + jsonl("Two"))
    poller = inbox.poller()

    await poller.poll_once()
    (result,) = await poller.poll_once()

    assert result.outcome == "done"
    assert [p.title for p in inbox.papers] == ["One", "Two"]
    errors_text = (inbox.dir / "done" / "mixed.jsonl.errors.txt").read_text()
    assert errors_text.startswith("line 2: invalid JSON")


async def test_a_file_dropped_again_under_the_same_name_does_not_overwrite_the_first(
    inbox: Inbox,
) -> None:
    poller = inbox.poller()
    for titles in (("One",), ("Two",)):
        inbox.drop("papers.jsonl.gz.txt", jsonl(*titles))
        await poller.poll_once()
        await poller.poll_once()

    done = sorted(p.name for p in (inbox.dir / "done").iterdir())
    assert done == ["papers-2.jsonl.gz.txt", "papers.jsonl.gz.txt"]
    assert [p.title for p in inbox.papers] == ["One", "Two"]


async def test_a_file_whose_import_hits_a_redis_failure_stays_for_the_next_poll(
    inbox: Inbox,
) -> None:
    inbox.drop("papers.jsonl", jsonl("One"))
    # Nothing listens on this port: redis-py connects lazily, so the publish is what fails.
    down = RedisBroker(f"redis://127.0.0.1:{free_port()}/0")
    brokers = [down, inbox.broker]  # the first import meets Redis down, the next finds it back

    async def importer(path: Path) -> ImportReport:
        return await import_file(path, brokers.pop(0), inbox.seen, now=NOW)

    poller = InboxPoller(inbox.dir, importer, poll_seconds=0.01)
    async with down:
        await poller.poll_once()
        (failed,) = await poller.poll_once()
    (retried,) = await poller.poll_once()

    assert failed.outcome == "retry"
    assert failed.path == inbox.dir / "papers.jsonl"
    assert retried.outcome == "done"
    assert [p.title for p in inbox.papers] == ["One"]


async def wait_until(condition: Callable[[], bool], attempts: int = 1_000) -> None:
    """Wait for a background task's visible effect (at most ~10 s)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background task did not get there")


async def test_the_app_imports_dropped_files_in_the_background_and_counts_them(
    tmp_path: Path,
) -> None:
    settings = Settings(redis_url="redis://unused", data_dir=tmp_path, inbox_poll_seconds=0.01)
    papers: list[PaperIngested] = []
    app = create_app(
        settings,
        broker=collecting_broker(papers),
        seen=MemorySeenPapers(),
        ensure_groups=False,
    )
    assert not (tmp_path / "inbox").exists()  # creating the app touches nothing
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "papers.jsonl").write_text(jsonl("One", "Two") + "{bad\n")

    async with TestRedisBroker(app.broker), TestApp(app):
        await wait_until(lambda: (inbox / "done" / "papers.jsonl").exists())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            healthz = await http.get("/healthz")
            # The poller moves a file to done/ before it counts it (on_result): wait for both.
            done = 'paperwire_ingest_inbox_files_total{outcome="done"} 1.0'
            for _ in range(500):
                metrics = (await http.get("/metrics")).text
                if done in metrics:
                    break
                await asyncio.sleep(0.01)

    assert [p.title for p in papers] == ["One", "Two"]
    assert healthz.status_code == 200
    assert 'paperwire_papers_ingested_total{source="file"} 2.0' in metrics
    assert 'paperwire_ingest_bad_lines_total{source="file"} 1.0' in metrics
    assert done in metrics


def test_settings_come_from_the_documented_environment_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    monkeypatch.setenv("PAPERWIRE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INGEST_PORT", "9001")
    monkeypatch.setenv("INGEST_INBOX_POLL_SECONDS", "0.5")
    monkeypatch.setenv("DATA_DIR", "/somewhere/else")  # generic names are not ours

    settings = Settings()

    assert settings.redis_url == "redis://example:6379/0"
    assert settings.inbox_dir == tmp_path / "inbox"
    assert settings.port == 9001
    assert settings.inbox_poll_seconds == 0.5


def test_settings_need_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)

    with pytest.raises(ValueError, match="REDIS_URL"):
        Settings()
