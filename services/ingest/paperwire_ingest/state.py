"""What ingest remembers about its network sources, in Redis: each source's status, backfill checkpoints.

A source's status holds its cursor (where the next run starts) and the outcome of its runs, so a
restarted service resumes where it stopped and ``paperwire sources`` can tell what happened. A
backfill's checkpoint says which (set, day) comes next and the resumption token inside it.
Each record is one JSON value in a hash, written whole.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel

SOURCES_KEY = "paperwire:ingest:sources"
BACKFILLS_KEY = "paperwire:ingest:backfills"


class SourceStatus(BaseModel):
    name: str
    enabled: bool = False
    last_run: datetime | None = None
    last_success: datetime | None = None
    next_run: datetime | None = None
    # Consecutive failed runs, and why the last one failed.
    failures: int = 0
    last_error: str = ""
    # Papers found by the last successful run, and how many of them were new (published).
    found: int = 0
    published: int = 0
    published_total: int = 0
    detail: str = ""
    # Where the next run starts: the last arXiv announcement read, the last HF day read.
    cursor: str = ""


class Checkpoint(BaseModel):
    """A backfill's position: ``unit`` indexes its (set, day) pairs, ``token`` the page inside."""

    job: str
    units: int
    unit: int = 0
    token: str = ""
    records: int = 0
    published: int = 0
    done: bool = False
    updated_at: datetime | None = None


class SourceState(Protocol):
    async def status(self, name: str) -> SourceStatus: ...

    async def save_status(self, status: SourceStatus) -> None: ...

    async def statuses(self) -> list[SourceStatus]: ...

    async def checkpoint(self, job: str) -> Checkpoint | None: ...

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def checkpoints(self) -> list[Checkpoint]: ...

    async def forget_checkpoint(self, job: str) -> None: ...


class RedisSourceState:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> RedisSourceState:
        """Connects lazily, on the first call."""
        return cls(aioredis.from_url(url))

    async def status(self, name: str) -> SourceStatus:
        raw = await self._client.hget(SOURCES_KEY, name)
        return SourceStatus.model_validate_json(raw) if raw else SourceStatus(name=name)

    async def save_status(self, status: SourceStatus) -> None:
        await self._client.hset(SOURCES_KEY, status.name, status.model_dump_json())

    async def statuses(self) -> list[SourceStatus]:
        raw = await self._client.hgetall(SOURCES_KEY)
        return sorted(
            (SourceStatus.model_validate_json(value) for value in raw.values()),
            key=lambda s: s.name,
        )

    async def checkpoint(self, job: str) -> Checkpoint | None:
        raw = await self._client.hget(BACKFILLS_KEY, job)
        return Checkpoint.model_validate_json(raw) if raw else None

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._client.hset(BACKFILLS_KEY, checkpoint.job, checkpoint.model_dump_json())

    async def checkpoints(self) -> list[Checkpoint]:
        raw = await self._client.hgetall(BACKFILLS_KEY)
        return sorted(
            (Checkpoint.model_validate_json(value) for value in raw.values()), key=lambda c: c.job
        )

    async def forget_checkpoint(self, job: str) -> None:
        await self._client.hdel(BACKFILLS_KEY, job)

    async def aclose(self) -> None:
        await self._client.aclose()


class MemorySourceState:
    """The same records in dicts, for tests: forgotten when the process ends."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.backfills: dict[str, str] = {}

    async def status(self, name: str) -> SourceStatus:
        raw = self.sources.get(name)
        return SourceStatus.model_validate_json(raw) if raw else SourceStatus(name=name)

    async def save_status(self, status: SourceStatus) -> None:
        self.sources[status.name] = status.model_dump_json()

    async def statuses(self) -> list[SourceStatus]:
        return [await self.status(name) for name in sorted(self.sources)]

    async def checkpoint(self, job: str) -> Checkpoint | None:
        raw = self.backfills.get(job)
        return Checkpoint.model_validate_json(raw) if raw else None

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.backfills[checkpoint.job] = checkpoint.model_dump_json()

    async def checkpoints(self) -> list[Checkpoint]:
        return [
            Checkpoint.model_validate_json(self.backfills[job]) for job in sorted(self.backfills)
        ]

    async def forget_checkpoint(self, job: str) -> None:
        self.backfills.pop(job, None)
