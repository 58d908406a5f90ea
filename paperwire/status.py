"""`paperwire status`: the whole pipeline on one screen, read from Redis and the SQL database.

Streams and groups come from Redis (the same reading as every service's /metrics); each network
source's last harvest from the record ingest keeps in Redis; today's digests from recommend's
delivery ledger in SQL. Whatever cannot be read is shown as "n/a" with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from paperwire_shared import streams
from paperwire_shared.streamstats import StreamStats, read_stream_stats

log = logging.getLogger(__name__)

# Where ingest keeps one JSON record per network source (paperwire_ingest/state.py). Read as
# plain JSON so this works where the ingest package is not installed (the recommend image).
SOURCES_KEY = "paperwire:ingest:sources"


@dataclass(frozen=True)
class Harvest:
    source: str
    enabled: bool
    last_success: datetime | None
    last_run: datetime | None
    failures: int
    last_error: str
    published: int


@dataclass
class Status:
    now: datetime
    redis: str
    streams: list[StreamStats] = field(default_factory=list)
    harvests: list[Harvest] | None = None
    # digest state -> count of digests due today (UTC), from recommend's ledger.
    digests_today: dict[str, int] | None = None
    digests_note: str = ""


def redacted(url: str) -> str:
    """A server URL without its credentials, for the screen."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def read_harvests(client: aioredis.Redis) -> list[Harvest]:
    records = await client.hgetall(SOURCES_KEY)
    found = []
    for raw in records.values():
        record = json.loads(raw)
        found.append(
            Harvest(
                source=record["name"],
                enabled=bool(record.get("enabled", False)),
                last_success=_when(record.get("last_success")),
                last_run=_when(record.get("last_run")),
                failures=int(record.get("failures", 0)),
                last_error=str(record.get("last_error", "")),
                published=int(record.get("published", 0)),
            )
        )
    return sorted(found, key=lambda h: h.source)


def read_digests_today(database_url: str, now: datetime) -> dict[str, int]:
    """Digests due since midnight UTC, by state (due, sending, sent, skipped, failed)."""
    # Imported here: the ingest and embed images have this command but no SQL or recommend.
    import sqlalchemy as sa

    from paperwire_recommend.store import DIGEST_STATES, digests

    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    query = (
        sa.select(digests.c.state, sa.func.count())
        .where(digests.c.created_at >= midnight, digests.c.created_at < midnight + timedelta(1))
        .group_by(digests.c.state)
    )
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            counts: dict[str, int] = {state: n for state, n in conn.execute(query)}
    finally:
        engine.dispose()
    return {state: counts.pop(state, 0) for state in DIGEST_STATES} | counts


async def gather(redis_url: str, database_url: str | None, now: datetime) -> Status:
    status = Status(now=now, redis=redacted(redis_url))
    client = aioredis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        status.streams = await read_stream_stats(client)
        status.harvests = await read_harvests(client)
    finally:
        await client.aclose()
    if database_url is None:
        status.digests_note = "no database: set DATABASE_URL"
    else:
        try:
            from sqlalchemy.exc import SQLAlchemyError

            status.digests_today = read_digests_today(database_url, now)
        except ImportError:
            status.digests_note = "recommend is not installed here: run this where it is"
        except SQLAlchemyError as exc:
            # A database recommend never started on has no ledger yet.
            log.debug("could not read the ledger: %s", exc)
            status.digests_note = f"cannot read the ledger at {redacted(database_url)}"
    return status


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        span = f"{seconds}s"
    elif seconds < 7200:
        span = f"{seconds // 60}m"
    elif seconds < 172_800:
        span = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    else:
        span = f"{seconds // 86400}d"
    return f"{then.astimezone(UTC):%Y-%m-%d %H:%M} ({span} ago)"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def render(status: Status) -> str:
    now = status.now
    lines = [
        f"paperwire status at {now.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({status.redis})",
        "",
    ]

    rows = [
        ["STREAM", "LENGTH", "LAST ENTRY", "GROUP", "LAG", "PENDING", "CONSUMERS", "OLDEST PENDING"]
    ]
    for s in status.streams:
        first = [s.stream, str(s.length), _ago(s.last_entry_at, now)]
        if not s.groups:
            rows.append([*first, "-", "", "", "", ""])
        for index, g in enumerate(s.groups):
            idle = f"{g.oldest_pending_idle:.0f}s" if g.oldest_pending_idle is not None else "-"
            lag = "?" if g.lag is None else str(g.lag)
            head = first if index == 0 else ["", "", ""]
            rows.append([*head, g.name, lag, str(g.pending), str(g.consumers), idle])
    lines += _table(rows, right={1, 4, 5, 6, 7})

    dead = next((s.length for s in status.streams if s.stream == streams.DEAD_LETTERS), 0)
    hint = ": read them with `paperwire dlq`" if dead else ""
    lines += ["", f"Dead letters: {dead}{hint}", ""]

    if not status.harvests:
        lines.append("Sources: n/a (no network source has run; files come in through the inbox)")
    else:
        rows = [["SOURCE", "LAST HARVEST", "LAST RUN", "PUBLISHED", "STATE"]]
        for h in status.harvests:
            state = "ok" if not h.failures else f"failing ({h.failures} in a row): {h.last_error}"
            if not h.enabled:
                state = f"disabled; {state}"
            rows.append(
                [
                    h.source,
                    _ago(h.last_success, now),
                    _ago(h.last_run, now),
                    str(h.published),
                    state,
                ]
            )
        lines += _table(rows, right={3})

    lines.append("")
    if status.digests_today is None:
        lines.append(f"Digests today (UTC): n/a ({status.digests_note})")
    else:
        counts = "  ".join(f"{state} {n}" for state, n in status.digests_today.items())
        lines.append(f"Digests today (UTC): {counts}")
    return "\n".join(lines)


def as_json(status: Status) -> str:
    def default(value: object) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value))

    return json.dumps(asdict(status), default=default, indent=2)
