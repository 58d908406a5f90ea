"""The de-duplication memory of ingest: what was last published under each paper id.

It outlives imports and restarts (Redis), so importing the same file twice publishes nothing the
second time, while a new version of a paper, or a changed text, is published again. It also keeps
each paper's popularity (Hugging Face upvotes): a new upvote count is published again with the
same text (embed then updates the stored paper without encoding it again), and an event that
carries no popularity, such as arXiv's next version of the paper, leaves with the known count, so
no source erases another's signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from paperwire_shared.events import PaperIngested

SEEN_KEY = "paperwire:ingest:seen"
# paper_id -> the last popularity published for it.
POPULARITY_KEY = "paperwire:ingest:popularity"

# KEYS[1] maps paper_id -> "<version>:<content_hash>" of the last paper published under that id,
# KEYS[2] paper_id -> its last popularity. ARGV holds (id, version, hash, popularity or "")
# per paper. A claim checks and sets in one script, so two importers never both claim the same
# event; first occurrence wins, inside one call too. An older version than the one remembered is
# stale, not new: importing last month's file again must not bring v1 back over v2. A paper is
# new when its text, its version or its popularity changed. Returns {position, popularity known
# after the claim or ""} for each paper claimed, positions 1-based.
_CLAIM = """
local fresh = {}
for i = 1, #ARGV, 4 do
  local version = tonumber(ARGV[i + 1])
  local seen = redis.call('HGET', KEYS[1], ARGV[i])
  local seen_version, seen_hash = -1, false
  local v, h = string.match(seen or '', '^(%d+):(.*)$')
  if v then
    seen_version, seen_hash = tonumber(v), h
  end
  local known = redis.call('HGET', KEYS[2], ARGV[i])
  local popularity = ARGV[i + 3]
  if seen_version <= version then
    local new_popularity = popularity ~= '' and popularity ~= known
    if seen_hash ~= ARGV[i + 2] or seen_version < version or new_popularity then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
      if popularity ~= '' then
        redis.call('HSET', KEYS[2], ARGV[i], popularity)
        known = popularity
      end
      fresh[#fresh + 1] = {(i + 3) / 4, known or ''}
    end
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
        """The papers not seen before (in order, first occurrence wins), now remembered as seen.

        Each carries the paper's known popularity when it came without one.
        """
        ...

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        """Undo ``claim`` for papers that could not be published, so a later import retries them."""
        ...


def _triples(papers: Sequence[PaperIngested]) -> list[str | int]:
    return [value for p in papers for value in (p.paper_id, p.version, p.content_hash)]


def _quads(papers: Sequence[PaperIngested]) -> list[str | int]:
    return [
        value
        for p in papers
        for value in (p.paper_id, p.version, p.content_hash, _popularity(p.popularity))
    ]


def _popularity(value: int | None) -> str:
    return "" if value is None else str(value)


def _with_popularity(paper: PaperIngested, known: int | None) -> PaperIngested:
    if paper.popularity is not None or known is None:
        return paper
    return paper.model_copy(update={"popularity": known})


class RedisSeenPapers:
    """Two Redis hashes (``SEEN_KEY``, ``POPULARITY_KEY``), changed only by the two scripts."""

    def __init__(
        self, client: aioredis.Redis, key: str = SEEN_KEY, popularity_key: str = POPULARITY_KEY
    ) -> None:
        self._client = client
        self._key = key
        self._popularity_key = popularity_key
        self._claim = client.register_script(_CLAIM)
        self._forget = client.register_script(_FORGET)

    @classmethod
    def from_url(cls, url: str) -> RedisSeenPapers:
        """Connects lazily, on the first claim."""
        return cls(aioredis.from_url(url))

    async def claim(self, papers: Sequence[PaperIngested]) -> list[PaperIngested]:
        if not papers:
            return []
        rows = await self._claim(keys=[self._key, self._popularity_key], args=_quads(papers))
        return [
            _with_popularity(papers[int(pos) - 1], int(known) if known else None)
            for pos, known in rows
        ]

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        if papers:
            await self._forget(keys=[self._key], args=_triples(papers))

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def aclose(self) -> None:
        await self._client.aclose()


class MemorySeenPapers:
    """The same rules in dicts, for tests and one-off runs: forgotten when the process ends."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, str]] = {}
        self.popularity: dict[str, int] = {}

    async def claim(self, papers: Sequence[PaperIngested]) -> list[PaperIngested]:
        fresh = []
        for paper in papers:
            version, content_hash = self.seen.get(paper.paper_id, (0, ""))
            known = self.popularity.get(paper.paper_id)
            if version > paper.version:
                continue
            new_popularity = paper.popularity is not None and paper.popularity != known
            if content_hash != paper.content_hash or version < paper.version or new_popularity:
                self.seen[paper.paper_id] = (paper.version, paper.content_hash)
                if paper.popularity is not None:
                    self.popularity[paper.paper_id] = known = paper.popularity
                fresh.append(_with_popularity(paper, known))
        return fresh

    async def forget(self, papers: Sequence[PaperIngested]) -> None:
        for paper in papers:
            if self.seen.get(paper.paper_id) == (paper.version, paper.content_hash):
                del self.seen[paper.paper_id]
