"""When a user's digest is due, and under which key (pure: the clock is an argument)."""

from __future__ import annotations

from datetime import datetime

FREQUENCIES = ("daily", "weekly", "off")


def period_key(user_id: str, frequency: str, now: datetime, digest_hour: int) -> str | None:
    """The key of the digest due at ``now`` (UTC), or None when none is due yet.

    One key per period (a day, an ISO week), so a scheduler that ticks many times, or catches up after
    downtime, produces one digest per period and never two.
    """
    if frequency == "off" or now.hour < digest_hour:
        return None
    if frequency == "daily":
        return f"{user_id}/{now:%Y-%m-%d}"
    if frequency == "weekly":
        year, week, _ = now.isocalendar()
        return f"{user_id}/{year}-W{week:02d}"
    raise ValueError(f"unknown digest frequency {frequency!r}")


def on_demand_key(user_id: str, now: datetime) -> str:
    """The key of a digest asked for now (``paperwire digest --now``), outside the schedule."""
    return f"{user_id}/now-{now:%Y%m%dT%H%M%S%f}"
