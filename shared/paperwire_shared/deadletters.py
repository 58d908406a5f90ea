"""The operator's view of the dead-letter stream: list, show, replay and drop (``paperwire dlq``).

Entries are written by delivery.py as ``DeadLetter`` records. Replaying publishes the original
entry again onto its stream (a new entry, read by the group like any other), then deletes the dead
letter; a crash in between replays it twice, which idempotent handlers absorb.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from faststream.redis import RedisBroker
from faststream.redis.parser.binary import BinaryMessageFormatV1
from pydantic import ValidationError

from paperwire_shared import streams
from paperwire_shared.delivery import DeadLetter

_DATA_FIELD = b"__data__"


class NotFound(LookupError):
    """No dead letter has that id."""


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter and its own id in ``streams.DEAD_LETTERS``."""

    id: str
    letter: DeadLetter


def _letter(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> StoredDeadLetter:
    text_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    # FastStream's envelope (or bare JSON); anything else is shown as found, never hidden.
    body, _ = BinaryMessageFormatV1.parse(fields.get(_DATA_FIELD, b""))
    try:
        letter = DeadLetter.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        letter = DeadLetter(
            stream="?",
            entry={
                k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()
            },
            error=f"not a dead-letter record: {exc}",
            dead_at=_id_time(text_id),
        )
    return StoredDeadLetter(text_id, letter)


def _id_time(entry_id: str) -> datetime:
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, UTC)


async def list_letters(
    client: aioredis.Redis, *, stream: str | None = None, limit: int | None = None
) -> list[StoredDeadLetter]:
    """Dead letters, oldest first; only those from ``stream`` when given."""
    found = []
    # redis-py's stubs type replies loosely; these are (id, {field: value}) pairs of bytes.
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(streams.DEAD_LETTERS)  # type: ignore[assignment]
    for entry_id, fields in entries:
        stored = _letter(entry_id, fields)
        if stream is None or stored.letter.stream == stream:
            found.append(stored)
            if limit is not None and len(found) >= limit:
                break
    return found


async def get_letter(client: aioredis.Redis, letter_id: str) -> StoredDeadLetter:
    found: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
        streams.DEAD_LETTERS, min=letter_id, max=letter_id
    )
    if not found:
        raise NotFound(letter_id)
    return _letter(*found[0])


async def _chosen(
    client: aioredis.Redis, ids: Iterable[str], stream: str | None
) -> list[StoredDeadLetter]:
    ids = list(ids)
    if ids:
        return [await get_letter(client, letter_id) for letter_id in ids]
    return await list_letters(client, stream=stream)


async def replay(
    redis_url: str, ids: Iterable[str] = (), *, stream: str | None = None
) -> list[StoredDeadLetter]:
    """Publish the chosen dead letters (all, or those of ``stream``, when no ids) again; delete them.

    Letters whose original stream is unknown are left where they are.
    """
    client = aioredis.from_url(redis_url)
    broker = RedisBroker(redis_url)
    try:
        chosen = await _chosen(client, ids, stream)
        await broker.connect()
        replayed = []
        for stored in chosen:
            if stored.letter.stream not in streams.GROUPS:
                continue
            # Published the way services publish, so the group reads it like any other entry.
            await broker.publish(stored.letter.entry, stream=stored.letter.stream)
            await client.xdel(streams.DEAD_LETTERS, stored.id)
            replayed.append(stored)
        return replayed
    finally:
        await broker.stop()
        await client.aclose()


async def drop(
    client: aioredis.Redis, ids: Iterable[str] = (), *, stream: str | None = None
) -> int:
    """Delete the chosen dead letters (all, or those of ``stream``, when no ids): how many."""
    chosen = await _chosen(client, ids, stream)
    if not chosen:
        return 0
    return int(await client.xdel(streams.DEAD_LETTERS, *[s.id for s in chosen]))


def summary(stored: StoredDeadLetter) -> str:
    """One line: the letter's id, where it came from, how often it failed and why."""
    letter = stored.letter
    error = letter.error.splitlines()[0] if letter.error else ""
    return (
        f"{stored.id}  {letter.stream}  entry {letter.entry_id or '-'}  "
        f"{letter.deliveries} deliveries  {letter.dead_at:%Y-%m-%d %H:%M:%S}  {error[:120]}"
    )


def as_json(stored: StoredDeadLetter) -> dict[str, object]:
    return {"id": stored.id, **stored.letter.model_dump(mode="json")}


async def command(
    redis_url: str,
    action: str,
    *,
    ids: Iterable[str] = (),
    stream: str | None = None,
    every: bool = False,
    limit: int | None = None,
    json_output: bool = False,
) -> list[str]:
    """``paperwire dlq ACTION``: the lines to print. Raises ``NotFound`` for an unknown id."""
    ids = list(ids)
    if action in ("replay", "drop") and not ids and not every and stream is None:
        raise ValueError(f"name the dead letters to {action} (their ids), or --all, or --stream")
    if action == "replay":
        replayed = await replay(redis_url, ids, stream=stream)
        return [f"replayed {s.id} onto {s.letter.stream}" for s in replayed] + [
            f"{len(replayed)} dead letters replayed"
        ]
    client = aioredis.from_url(redis_url)
    try:
        if action == "list":
            found = await list_letters(client, stream=stream, limit=limit)
            if json_output:
                return [json.dumps([as_json(s) for s in found], indent=2)]
            return [summary(s) for s in found] or ["no dead letters"]
        if action == "show":
            shown = [await get_letter(client, letter_id) for letter_id in ids]
            return [
                json.dumps(
                    [as_json(s) for s in shown] if len(shown) > 1 else as_json(shown[0]), indent=2
                )
            ]
        if action == "drop":
            return [f"{await drop(client, ids, stream=stream)} dead letters dropped"]
    finally:
        await client.aclose()
    raise ValueError(f"unknown action {action!r}: list, show, replay or drop")
