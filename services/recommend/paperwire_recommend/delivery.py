"""What a subscription becomes after a schedule change, a bounce or a delivery (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from paperwire_recommend.digest import Schedule
from paperwire_recommend.store import Subscription

# Consecutive bounced digests after which an address gets no more email: one 5xx can be a passing
# misconfiguration on the receiving side; three in a row is an address that is gone.
DEFAULT_BOUNCE_LIMIT = 3


def receives_digests(sub: Subscription) -> bool:
    return sub.active and sub.schedule.frequency != "off"


def with_schedule(sub: Subscription, schedule: Schedule, now: datetime) -> Subscription:
    """``sub`` on a new schedule. Digests that restart (from off) start now: nothing is backfilled."""
    changed = replace(sub, schedule=schedule)
    if not receives_digests(sub) and receives_digests(changed):
        changed = replace(changed, starts_at=now)
    return changed


def resubscribed(sub: Subscription, now: datetime) -> Subscription:
    """The user asked for email again (after unsubscribing or being suppressed)."""
    if sub.active:
        return sub
    return replace(sub, status="active", bounces=0, starts_at=now)


def unsubscribed(sub: Subscription) -> Subscription:
    return replace(sub, status="unsubscribed")


def after_bounce(sub: Subscription, limit: int = DEFAULT_BOUNCE_LIMIT) -> Subscription:
    """One more bounce in a row; at ``limit`` the address is suppressed."""
    bounces = sub.bounces + 1
    status = "suppressed" if bounces >= limit and sub.status == "active" else sub.status
    return replace(sub, bounces=bounces, status=status)


def after_delivery(sub: Subscription) -> Subscription:
    """A digest reached the mail server: the address works again."""
    return replace(sub, bounces=0) if sub.bounces else sub


def mail_status(sub: Subscription) -> str:
    """The subscription as the manage page says it."""
    if sub.status == "unsubscribed":
        return "unsubscribed: no digests are sent"
    if sub.status == "suppressed":
        return f"stopped: your address bounced {sub.bounces} times in a row"
    if sub.bounces:
        return f"bouncing: the last {sub.bounces} digest(s) were refused by your mail server"
    if sub.schedule.frequency == "off":
        return "off: no digests are scheduled"
    if sub.schedule.paused:
        return "paused"
    return "active"
