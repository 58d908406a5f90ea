"""How far the pipeline got, watched from outside through the streams' consumer groups."""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

from paperwire_shared import streams


async def wait_until_embedded(redis_url: str, timeout: float = 3_600) -> None:
    """Until embed has read and acknowledged every ingested paper, printing progress to stderr."""
    client = aioredis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            groups = await client.xinfo_groups(streams.PAPERS_INGESTED)
            group = next(g for g in groups if g["name"].decode() == streams.EMBED_GROUP)
            total = await client.xlen(streams.PAPERS_INGESTED)
            waiting = (group.get("lag") or 0) + group["pending"]
            print(
                f"\r  embedded {total - waiting}/{total} papers",
                end="",
                file=sys.stderr,
                flush=True,
            )
            if waiting == 0:
                print(file=sys.stderr)
                return
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()
    raise TimeoutError(f"embedding did not finish within {timeout:.0f} s")
