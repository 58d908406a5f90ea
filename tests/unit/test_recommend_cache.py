"""The ranking models recommend keeps in memory are built once, however many requests wait."""

from __future__ import annotations

import asyncio
import threading
import time

from paperwire_recommend.recommender import _Cached


async def test_concurrent_first_requests_share_one_build():
    builds = []
    lock = threading.Lock()

    def build() -> int:
        with lock:
            builds.append(1)
        time.sleep(0.05)
        return len(builds)

    cache = _Cached(build, max_age=60)
    values = await asyncio.gather(*(cache.get() for _ in range(16)))
    assert values == [1] * 16
    assert len(builds) == 1


async def test_a_stale_model_keeps_serving_while_one_rebuild_runs():
    builds = []

    def build() -> int:
        builds.append(1)
        return len(builds)

    cache = _Cached(build, max_age=0)
    assert await cache.get() == 1
    stale = await asyncio.gather(*(cache.get() for _ in range(8)))
    assert set(stale) <= {1, 2}
    await asyncio.sleep(0.05)
    assert len(builds) == 2
