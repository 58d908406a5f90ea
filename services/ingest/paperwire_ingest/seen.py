"""The de-duplication memory of ingest: which (paper_id, content_hash) pairs were already published.

It outlives imports and restarts (Redis), so importing the same file twice publishes nothing the
second time, while a new version of a paper whose text changed is published again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from paperwire_shared.events import PaperIngested

SEEN_KEY = "paperwire:ingest:seen"

# Each field holds "<version>:<content_hash>" of the last paper published under that id. A claim
# checks and sets in one script, so two importers never both claim the same text; first occurrence
# wins, inside one call too. An older version than the one remembered is stale, not new: importing
# last month's file again must not bring v1 back over v2. Returns the 1-based positions claimed.
_CLAIM = """
local fresh = {}
for i = 1, #ARGV, 3 do
  local seen = redis.call('HGET', KEYS[1], ARGV[i])
  local version, hash = false, false
  if seen then
    version, hash = string.match(seen, '^(%d+):(.*)$')
  end
  local stale = version and tonumber(version) > tonumber(ARGV[i + 1])
  if not stale and hash ~= ARGV[i + 2] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
    fresh[#fresh + 1] = (i + 2) / 3
  end
end
return fresh
"""

# Undo a claim only where the value is still ours: a newer claim by another importer stays.
_FORGET = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] .. ':' .. ARGV[i + 2] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""


class SeenPapers(Protocol):
    async def claim(self, papers: Sequence[PaperIngested]) -> list[PaperIngested]:
        """The papers not seen before (in order, first occurrence wins), now remembered as seen."""
        ...

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        """Undo ``claim`` for papers that could not be published, so a later import retries them."""
        ...


def _triples(papers: Sequence[PaperIngested]) -> list[str | int]:
    return [value for p in papers for value in (p.paper_id, p.version, p.content_hash)]


class RedisSeenPapers:
    """A Redis hash ``paper_id -> "version:content_hash"``, changed only by the two scripts."""

    def __init__(self, client: aioredis.Redis, key: str = SEEN_KEY) -> None:
        self._client = client
        self._key = key
        self._claim = client.register_script(_CLAIM)
        self._forget = client.register_script(_FORGET)

    @classmethod
    def from_url(cls, url: str) -> RedisSeenPapers:
        """Connects lazily, on the first claim."""
        return cls(aioredis.from_url(url))

    async def claim(self, papers: Sequence[PaperIngested]) -> list[PaperIngested]:
        if not papers:
            return []
        positions = await self._claim(keys=[self._key], args=_triples(papers))
        return [papers[int(pos) - 1] for pos in positions]

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        if papers:
            await self._forget(keys=[self._key], args=_triples(papers))

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def aclose(self) -> None:
        await self._client.aclose()


class MemorySeenPapers:
    """The same rules in a dict, for tests and one-off runs: forgotten when the process ends."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, str]] = {}

    async def claim(self, papers: Sequence[PaperIngested]) -> list[PaperIngested]:
        fresh = []
        for paper in papers:
            version, content_hash = self.seen.get(paper.paper_id, (0, ""))
            if version <= paper.version and content_hash != paper.content_hash:
                self.seen[paper.paper_id] = (paper.version, paper.content_hash)
                fresh.append(paper)
        return fresh

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        for paper in papers:
            if self.seen.get(paper.paper_id) == (paper.version, paper.content_hash):
                del self.seen[paper.paper_id]
