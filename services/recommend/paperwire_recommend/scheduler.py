"""Decides which digests are due and hands each to notify once, as a DigestDue on the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from paperwire_recommend.config import Settings
from paperwire_recommend.digest import period_key
from paperwire_recommend.metrics import Metrics
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.store import Store, User
from paperwire_shared.events import DigestDue

log = logging.getLogger(__name__)

Publish = Callable[[DigestDue], Awaitable[None]]


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        recommender: Recommender,
        publish: Publish,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.recommender = recommender
        self.publish = publish
        self.metrics = metrics

    async def send(self, user: User, digest_key: str, now: datetime) -> DigestDue | str:
        """Rank, record (papers count as sent from here on), then publish; or record why not."""
        result = await self.recommender.build_digest(user, digest_key, now)
        if isinstance(result, str):
            await asyncio.to_thread(self.store.record_skipped, digest_key, user.id, result, now)
            self.metrics.digests_skipped.inc()
            log.info("digest %s skipped: %s", digest_key, result)
            return result
        paper_ids = [p.paper_id for p in result.papers]
        event = result.model_dump(mode="json")
        recorded = await asyncio.to_thread(
            self.store.record_digest, digest_key, user.id, paper_ids, event, now
        )
        if not recorded:
            return "already recorded"
        await self._publish(result)
        self.metrics.digests_due.inc()
        log.info("digest %s due with %d papers", digest_key, len(paper_ids))
        return result

    async def _publish(self, digest: DigestDue) -> None:
        await self.publish(digest)
        await asyncio.to_thread(self.store.mark_published, digest.digest_key)

    async def tick(self, now: datetime) -> None:
        # A crash between recording and publishing leaves digests in state "due": publish them now.
        for event in await asyncio.to_thread(self.store.unpublished_digests):
            await self._publish(DigestDue.model_validate(event))
        for user in await asyncio.to_thread(self.store.scheduled_users):
            key = period_key(user.id, user.frequency, now, self.settings.digest_hour_utc)
            if key and not await asyncio.to_thread(self.store.has_digest, key):
                try:
                    await self.send(user, key, now)
                except Exception:  # one user's failure must not stop everyone's digest
                    log.exception("digest %s failed; retried next tick", key)

    async def run(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except Exception:
                log.exception("scheduler tick failed; retrying")
            await asyncio.sleep(self.settings.scheduler_interval_seconds)
