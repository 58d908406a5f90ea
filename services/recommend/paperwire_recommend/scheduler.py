"""Decides which digests are due and hands each to notify once, as a DigestDue on the stream.

The ledger (recommend_digests) makes every step safe to repeat. A slot is recorded before anything
is published: ``skipped`` with its reason, or ``due`` with its papers (which count as sent from then
on, so no paper is sent twice). A ``due`` digest is published, then marked ``sending``; a crash in
between republishes it on the next tick, and notify's own ledger sends it once. notify reports each
outcome back (DigestSent, DigestFailed), and a transient failure makes the digest ``due`` again from
its ``retry_at``. Slots are worked oldest first and a slot that could not be recorded stops that
user's catch-up, so a later slot never hides a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from paperwire_recommend.config import Settings
from paperwire_recommend.delivery import receives_digests
from paperwire_recommend.digest import Schedule, Slot, due_slots
from paperwire_recommend.metrics import Metrics
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.store import Store, Subscription, User
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
        # The schedule of a user who never chose one.
        self.defaults = Schedule(send_hour=settings.digest_hour_utc)

    async def send(
        self, user: User, digest_key: str, now: datetime, *, send_empty: bool = False
    ) -> DigestDue | str:
        """Rank, record (papers count as sent from here on), then publish; or record why not.

        ``now`` is when the digest was due: a digest caught up after downtime keeps its own date.
        """
        result = await self.recommender.build_digest(user, digest_key, now)
        if isinstance(result, str) and send_empty:
            result = DigestDue(
                digest_key=digest_key,
                user_id=user.id,
                email=user.email,
                papers=(),
                created_at=now,
                empty_reason=result,
            )
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
        self.metrics.papers_recommended.inc(len(paper_ids))
        log.info("digest %s due with %d papers", digest_key, len(paper_ids))
        return result

    async def _publish(self, digest: DigestDue) -> None:
        await self.publish(digest)
        await asyncio.to_thread(self.store.mark_published, digest.digest_key, datetime.now(UTC))

    async def _run_slot(self, user: User, sub: Subscription, slot: Slot) -> None:
        if slot.skip is not None:
            await asyncio.to_thread(
                self.store.record_skipped, slot.key, user.id, slot.skip, slot.at
            )
            self.metrics.digests_skipped.inc()
            log.info("digest %s skipped: %s", slot.key, slot.skip)
            return
        await self.send(user, slot.key, slot.at, send_empty=sub.schedule.send_empty)

    async def _republish(self, now: datetime) -> None:
        """Digests recorded but not on the stream: after a crash, or due again after a failure."""
        for event in await asyncio.to_thread(self.store.unpublished_digests, now):
            digest = DigestDue.model_validate(event)
            user = await asyncio.to_thread(self.store.get_user, digest.user_id)
            sub = None
            if user is not None:
                sub = await asyncio.to_thread(self.store.get_subscription, user, self.defaults)
            if user is None or sub is None or not sub.active:
                await asyncio.to_thread(
                    self.store.mark_failed,
                    digest.digest_key,
                    "not sent: you unsubscribed before it went out",
                    None,
                    None,
                    now,
                )
                continue
            if user.email != digest.email:
                digest = digest.model_copy(update={"email": user.email})  # the address changed
            await self._publish(digest)

    async def tick(self, now: datetime) -> None:
        await self._republish(now)
        last_due = await asyncio.to_thread(self.store.last_due_times)
        oldest = now - timedelta(days=self.settings.catch_up_days)
        holidays = self.settings.arxiv_extra_holidays
        try:
            for user, sub in await asyncio.to_thread(self.store.subscribers, self.defaults):
                if not receives_digests(sub):
                    continue
                after = max(last_due.get(user.id, sub.starts_at), sub.starts_at, oldest)
                for slot in due_slots(user.id, sub.schedule, after, now, holidays):
                    try:
                        await self._run_slot(user, sub, slot)
                    except Exception:  # one user's failure must not stop everyone's digest
                        self.metrics.digest_errors.inc()
                        log.exception("digest %s failed; retried next tick", slot.key)
                        break  # later slots wait, so this one is never skipped over
        finally:
            self.recommender.forget_recent()  # the day's candidates, read once for this tick

    async def run(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except Exception:
                log.exception("scheduler tick failed; retrying")
            await asyncio.sleep(self.settings.scheduler_interval_seconds)
