"""Faults injected into the running services; after each, invariants over the whole history.

embed and notify run as separate processes (tests/faults/run_service.py) on a real Valkey with AOF;
the tests play ingest and recommend (they publish PaperIngested and DigestDue as those do). Faults:
kill -9 of embed and of notify mid-batch, then a restart; Valkey killed and restarted; Qdrant and
the database unreachable for a while; poison entries; SMTP down for a simulated hour. After each:

- every paper published is embedded: one point per distinct id, with the latest text;
- every due digest is sent exactly once (one email, one Message-ID) or recorded failed with a reason;
- the dead-letter stream holds exactly the poison entries, each once;
- every group has nothing left unread or unacknowledged.

Timings are scaled down: entries are taken over after 0.5 s without a heartbeat (60 s in
production) and dead-lettered at the third failed delivery.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from faststream.redis import RedisBroker
from faststream.redis.parser.binary import BinaryMessageFormatV1

from paperwire.stack import read_outbox
from paperwire_notify.ledger import Ledger
from paperwire_notify.render import message_id
from paperwire_shared import deadletters, streams
from paperwire_shared.events import DigestDue, PaperEmbedded, PaperIngested, RankedPaper
from paperwire_shared.vectors import QdrantEdgeStore
from tests.conftest import TEST_POSTGRES_URL
from tests.faults.harness import (
    RestartableValkey,
    ServiceProcess,
    SmtpSink,
    TcpProxy,
    eventually,
    wait_until,
)

RECLAIM_AFTER = 0.5
MAX_DELIVERIES = 3
# What makes the stand-in encoder fail, every time: a paper no retry can embed.
POISON = "poison-pill"
SEEN = datetime(2026, 11, 27, 6, tzinfo=UTC)


@dataclass
class History:
    """Everything the tests put into the pipeline, to check the invariants against."""

    papers: dict[str, str] = field(default_factory=dict)  # paper id: content hash of its text
    digests: set[str] = field(default_factory=set)  # digest keys
    poison: list[str] = field(default_factory=list)  # ids of entries that must be dead-lettered
    faults: list[str] = field(default_factory=list)


@dataclass
class Stack:
    root: Path
    valkey: RestartableValkey
    sink: SmtpSink
    database_url: str  # direct, for the test to read the ledger even while notify's is cut
    proxy: TcpProxy | None  # between notify and PostgreSQL; None on SQLite
    embed: ServiceProcess
    notify: ServiceProcess
    history: History

    @property
    def redis_url(self) -> str:
        return self.valkey.url

    @property
    def encoded_log(self) -> Path:
        return self.root / "encoded.log"


def _postgres_database() -> str | None:
    """A fresh PostgreSQL database, or None when there is no server to make one on."""
    admin = sa.create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = f"paperwire_faults_{uuid.uuid4().hex[:12]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        return None
    finally:
        admin.dispose()
    return sa.make_url(TEST_POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(url: str) -> None:
    admin = sa.create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("faults")
    valkey = RestartableValkey(root / "valkey")
    sink = SmtpSink(root / "outbox")
    database_url = _postgres_database()
    proxy = None
    if database_url is None:
        notify_database_url = database_url = f"sqlite:///{root / 'notify.db'}"
    else:
        direct = sa.make_url(database_url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
        notify_database_url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
    common = {
        "REDIS_URL": valkey.url,
        "PAPERWIRE_ENV": "development",
        "HF_HUB_OFFLINE": "1",
        # Their own copies only: a real QDRANT_URL or DATABASE_URL must not leak in.
        "QDRANT_URL": "",
    }
    embed = ServiceProcess(
        "embed",
        {
            **common,
            "PAPERWIRE_DATA_DIR": str(root / "embed"),
            "EMBED_BATCH_SIZE": "16",
            "EMBED_RECLAIM_AFTER_SECONDS": str(RECLAIM_AFTER),
            "EMBED_MAX_DELIVERIES": str(MAX_DELIVERIES),
            "FAULTS_ENCODE_DELAY": "0.05",
            "FAULTS_ENCODE_LOG": str(root / "encoded.log"),
            "FAULTS_ENCODE_HOLD": str(root / "encode-hold"),
            "FAULTS_ENCODE_HOLD_AFTER": "48",
            "FAULTS_POISON": POISON,
            "FAULTS_QDRANT_DOWN": str(root / "qdrant-down"),
        },
        root,
    )
    notify = ServiceProcess(
        "notify",
        {
            **common,
            "PAPERWIRE_DATA_DIR": str(root / "notify"),
            "DATABASE_URL": notify_database_url,
            "SMTP_URL": sink.url,
            "NOTIFY_RECLAIM_AFTER_SECONDS": str(RECLAIM_AFTER),
            "NOTIFY_MAX_DELIVERIES": str(MAX_DELIVERIES),
            # A live send to the local sink takes milliseconds; a crashed one is taken over after 2 s.
            "NOTIFY_CLAIM_TIMEOUT_SECONDS": "2",
        },
        root,
    )
    built = Stack(root, valkey, sink, database_url, proxy, embed, notify, History())
    try:
        embed.start()
        notify.start()
        yield built
    finally:
        # What this run injected and put through, for the README's figures.
        (root / "summary.txt").write_text(
            "\n".join(built.history.faults)
            + f"\npapers: {len(built.history.papers)}, digests: {len(built.history.digests)},"
            f" poison: {len(built.history.poison)}\n"
        )
        for service in (embed, notify):
            service.stop()
        sink.stop()
        valkey.stop()
        if proxy is not None:
            proxy.close()
            _drop_postgres_database(database_url)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(stack.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
def _show_logs_on_failure(stack: Stack, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for service in (stack.embed, stack.notify):
            print(f"--- {service.name} log ---\n{service.log_tail()}")


# What the tests publish, as ingest and recommend would.


def paper(n: int, *, title: str | None = None, version: int = 1) -> PaperIngested:
    return PaperIngested(
        paper_id=f"2611.{n:05d}",
        source="file",
        title=title or f"Paper number {n} on sparse attention",
        abstract=f"Abstract of paper {n}, version {version}.",
        version=version,
        ingested_at=SEEN,
    )


def digest(key: str, *, email: str = "reader@example.org") -> DigestDue:
    return DigestDue(
        digest_key=key,
        user_id=key.split("/")[0],
        email=email,
        papers=(
            RankedPaper(
                paper_id="2611.00001",
                title="Paper number 1 on sparse attention",
                score=0.9,
                reason="matches your interest: sparse attention",
            ),
        ),
        created_at=SEEN,
    )


async def ingest(stack: Stack, papers: list[PaperIngested]) -> None:
    broker = RedisBroker(stack.redis_url)
    async with broker:
        for p in papers:
            await broker.publish(p, stream=streams.PAPERS_INGESTED)
            if POISON not in p.text:
                stack.history.papers[p.paper_id] = p.content_hash


async def hand_over(stack: Stack, digests: list[DigestDue]) -> None:
    broker = RedisBroker(stack.redis_url)
    async with broker:
        for d in digests:
            await broker.publish(d, stream=streams.DIGESTS_DUE)
            stack.history.digests.add(d.digest_key)


# Invariants over the whole history.


async def group(client: aioredis.Redis, stream: str, name: str) -> dict:
    return next(g for g in await client.xinfo_groups(stream) if g["name"].decode() == name)


async def settled(client: aioredis.Redis) -> None:
    """Until embed and notify have read and acknowledged everything published so far."""

    async def done() -> bool:
        for stream, name in (
            (streams.PAPERS_INGESTED, streams.EMBED_GROUP),
            (streams.DIGESTS_DUE, streams.NOTIFY_GROUP),
        ):
            g = await group(client, stream, name)
            if g["pending"] or g["lag"]:
                return False
        return True

    await eventually(done, timeout=90, what="every group acknowledging everything")


async def check_dead_letters(stack: Stack, client: aioredis.Redis) -> None:
    letters = await deadletters.list_letters(client)
    assert Counter(s.letter.entry_id for s in letters) == Counter(stack.history.poison)


async def embedded_ids(client: aioredis.Redis) -> set[str]:
    """Ids announced on PaperEmbedded (never trimmed here: no recommend group reads them)."""
    found = set()
    for _, fields in await client.xrange(streams.PAPERS_EMBEDDED):
        body, _ = BinaryMessageFormatV1.parse(fields[b"__data__"])
        found.add(PaperEmbedded.model_validate_json(body).paper_id)
    return found


def check_points(stack: Stack) -> None:
    """One point per paper published, with its text: read with embed stopped (Edge: one process)."""
    stack.embed.stop()
    store = QdrantEdgeStore(stack.root / "embed" / "qdrant")
    try:
        stored = store.get(list(stack.history.papers))
        assert store.count() == len(stack.history.papers)
    finally:
        store.close()
    assert {s.paper_id: s.payload["content_hash"] for s in stored} == stack.history.papers


def re_encoded(stack: Stack) -> int:
    """Texts the model ran on more than once (only a batch cut off mid-encoding should be)."""
    lines = stack.encoded_log.read_text().split() if stack.encoded_log.exists() else []
    return sum(n - 1 for n in Counter(lines).values())


def check_digests(stack: Stack) -> None:
    ledger = Ledger(stack.database_url)
    try:
        rows = {key: ledger.get(key) for key in stack.history.digests}
    finally:
        ledger.close()
    lost = [key for key, row in rows.items() if row is None or row.state not in ("sent", "failed")]
    assert lost == []
    assert all(row.error for row in rows.values() if row and row.state == "failed")
    sent = {message_id(key) for key, row in rows.items() if row and row.state == "sent"}
    mail_ids = Counter(m.message["Message-ID"] for m in read_outbox(stack.sink.outbox))
    assert [mid for mid, n in mail_ids.items() if n > 1] == []  # no email twice
    assert set(mail_ids) == sent


async def check_everything(stack: Stack, client: aioredis.Redis) -> None:
    await settled(client)
    await check_dead_letters(stack, client)
    assert await embedded_ids(client) >= set(stack.history.papers)
    check_digests(stack)
    check_points(stack)  # stops embed: the next test starts it again


# The faults.


async def test_embed_killed_mid_batch_loses_no_paper_and_stores_each_once(
    stack: Stack, client: aioredis.Redis
) -> None:
    stack.embed.stop()
    papers = [paper(n) for n in range(1, 201)]
    await ingest(stack, papers + papers[:20])  # 20 delivered twice, as a flaky producer would
    # Once 48 papers are encoded the next batch waits, read and not acknowledged, to be encoded:
    # the kill lands mid-batch however fast or slow embed gets there.
    hold = stack.root / "encode-hold"
    holding = Path(f"{hold}.holding")
    hold.touch()
    stack.embed.start()  # its reads find a backlog: full batches from the first one

    async def mid_batch() -> bool:
        return holding.exists()

    async def some_embedded() -> bool:
        return await client.xlen(streams.PAPERS_EMBEDDED) >= 48

    await eventually(mid_batch, what="a batch held before it is encoded")
    await eventually(some_embedded, what="the first 48 papers embedded")
    stack.embed.kill()
    hold.unlink()
    holding.unlink()
    in_flight = (await group(client, streams.PAPERS_INGESTED, streams.EMBED_GROUP))["pending"]
    stack.history.faults.append(f"kill -9 embed with {in_flight} entries read, not acknowledged")
    assert in_flight > 0  # the kill did land mid-batch
    stack.embed.start()

    await check_everything(stack, client)
    assert re_encoded(stack) <= 16  # at most the batch cut off mid-encoding


async def test_notify_killed_mid_batch_sends_each_digest_once(
    stack: Stack, client: aioredis.Redis
) -> None:
    stack.notify.stop()  # started again below, in front of a backlog it reads in one go
    already = len(read_outbox(stack.sink.outbox))
    digests = [digest(f"reader-{n}/2026-11-27") for n in range(40)]
    # An address no server takes: recorded as failed, with the reason, and never sent.
    digests.append(digest("bad-address/2026-11-27", email="reader@example.org\r\nBcc: x@y.z"))
    await hand_over(stack, digests)
    # notify reads all of them in one read, then the sink holds it in the 11th SMTP transaction.
    with stack.sink.holding_after(already + 10) as holding:
        stack.notify.start()
        assert await asyncio.to_thread(holding.wait, 30)
        stack.notify.kill()
    in_flight = (await group(client, streams.DIGESTS_DUE, streams.NOTIFY_GROUP))["pending"]
    stack.history.faults.append(f"kill -9 notify mid-send with {in_flight} digests unacknowledged")
    assert in_flight > 1
    stack.notify.start()

    await check_everything(stack, client)


async def test_valkey_killed_and_restarted_loses_nothing(
    stack: Stack, client: aioredis.Redis
) -> None:
    stack.embed.ensure_running()
    stack.notify.ensure_running()
    await ingest(stack, [paper(n) for n in range(201, 301)])
    await hand_over(stack, [digest(f"reader-{n}/2026-11-28") for n in range(20)])

    async def some_embedded() -> bool:
        return len(await embedded_ids(client)) >= len(stack.history.papers) - 80

    await eventually(some_embedded, what="embedding under way")
    await client.aclose()
    stack.valkey.kill_and_restart(down_for=1.0)  # SIGKILL: only what AOF kept survives
    stack.history.faults.append("kill -9 Valkey mid-stream, restarted on its AOF after 1 s")
    restarted = aioredis.from_url(stack.redis_url)
    try:
        await check_everything(stack, restarted)
    finally:
        await restarted.aclose()


async def test_qdrant_unreachable_holds_papers_until_it_is_back(
    stack: Stack, client: aioredis.Redis
) -> None:
    stack.embed.ensure_running()
    down = stack.root / "qdrant-down"
    down.touch()
    try:
        wait_until(lambda: not stack.embed.ready(), what="embed not ready")
        await ingest(stack, [paper(n) for n in range(301, 341)])
        # Ten times what dead-letters a failing entry (three deliveries, 0.5 s apart).
        await asyncio.sleep(RECLAIM_AFTER * MAX_DELIVERIES * 10 / 2)
        assert not stack.embed.ready()
        await check_dead_letters(stack, client)  # an outage dead-letters nothing
    finally:
        down.unlink()
    stack.history.faults.append("Qdrant unreachable for 7.5 s (simulated in the store adapter)")
    wait_until(stack.embed.ready, what="embed ready again")

    await check_everything(stack, client)


async def test_database_unreachable_holds_digests_until_it_is_back(
    stack: Stack, client: aioredis.Redis
) -> None:
    if stack.proxy is None:
        pytest.skip(f"no PostgreSQL at {TEST_POSTGRES_URL} to cut notify off from")
    stack.notify.ensure_running()
    sent_before = len(read_outbox(stack.sink.outbox))
    stack.proxy.cut()
    try:
        wait_until(lambda: not stack.notify.ready(), what="notify not ready")
        await hand_over(stack, [digest(f"reader-{n}/2026-11-29") for n in range(10)])
        await asyncio.sleep(RECLAIM_AFTER * MAX_DELIVERIES * 10 / 2)
        assert not stack.notify.ready()
        assert len(read_outbox(stack.sink.outbox)) == sent_before
    finally:
        stack.proxy.restore()
    stack.history.faults.append("PostgreSQL unreachable for 7.5 s (connections cut at a proxy)")
    wait_until(stack.notify.ready, what="notify ready again")

    await check_everything(stack, client)


async def test_poison_entries_end_in_the_dead_letters_and_nothing_else_does(
    stack: Stack, client: aioredis.Redis
) -> None:
    stack.embed.ensure_running()
    stack.notify.ensure_running()
    good = [paper(n) for n in range(341, 371)]
    await ingest(stack, good[:15])
    poison_ids = [
        # Not even text: written without FastStream by a broken producer.
        await client.xadd(streams.PAPERS_INGESTED, {"paper_id": b"\xff\xfe"}),
        # JSON, but not a PaperIngested (no title).
        await client.xadd(streams.PAPERS_INGESTED, {"__data__": b'{"paper_id": "2611.99999"}'}),
        await client.xadd(streams.DIGESTS_DUE, {"__data__": b'{"digest_key": "k"}'}),
    ]
    broker = RedisBroker(stack.redis_url)
    async with broker:  # a valid paper the model fails on every time
        poison_ids.append(
            await broker.publish(paper(399, title=f"A {POISON}"), stream=streams.PAPERS_INGESTED)
        )
    await ingest(stack, good[15:])
    await hand_over(stack, [digest(f"reader-{n}/2026-11-30") for n in range(5)])
    stack.history.poison += [i.decode() for i in poison_ids]
    stack.history.faults.append("4 poison entries: 1 not text, 2 invalid events, 1 always failing")

    await settled(client)
    letters = {s.letter.entry_id: s.letter for s in await deadletters.list_letters(client)}
    assert letters[poison_ids[-1].decode()].deliveries == MAX_DELIVERIES
    assert "cannot encode" in letters[poison_ids[-1].decode()].error
    await check_everything(stack, client)


async def test_smtp_down_for_a_simulated_hour_sends_every_digest_once_it_is_back(
    stack: Stack, client: aioredis.Redis
) -> None:
    # One hour is 60 reclaim periods at the production setting (60 s): here 60 x 0.2 s.
    stack.notify.stop()
    stack.notify.start(NOTIFY_RECLAIM_AFTER_SECONDS="0.2")
    sent_before = len(read_outbox(stack.sink.outbox))
    stack.sink.stop()
    try:
        wait_until(lambda: not stack.notify.ready(), what="notify not ready")
        await asyncio.sleep(1.5)  # notify's last good check of SMTP is stale: it checks again
        await hand_over(stack, [digest(f"reader-{n}/2026-12-01") for n in range(10)])
        await asyncio.sleep(60 * 0.2)
        assert not stack.notify.ready()
        await check_dead_letters(stack, client)
    finally:
        stack.sink.start()
    stack.history.faults.append("SMTP down for 60 reclaim periods (an hour at 60 s)")
    wait_until(stack.notify.ready, what="notify ready again")

    await check_everything(stack, client)
    assert len(read_outbox(stack.sink.outbox)) == sent_before + 10
    stack.notify.stop()
    stack.notify.start()  # back to the module's timings
