"""When a user's digests are due, under which keys, and which are skipped (pure: the clock is an argument).

A user's schedule names a local hour in their own time zone (IANA, via zoneinfo) and a frequency:
daily, weekly on a chosen day, or off. Each digest has a key, one per user and local day (daily) or
ISO week (weekly), so however often the scheduler ticks, and however long it was down, each digest
is produced once: the scheduler asks for the slots between the last one it recorded and now.

Daily digests follow arXiv's announcement days: arXiv announces on weekday evenings, US Eastern
time, so a digest falling on a Saturday or Sunday there, or on one of arXiv's holidays, would carry
nothing new. Such a slot is recorded as skipped with the reason instead of sending an email.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FREQUENCIES = ("daily", "weekly", "off")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ARXIV_TIMEZONE = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class Schedule:
    """When one user gets their digest. ``weekday`` (0 = Monday) matters for weekly digests only."""

    frequency: str = "daily"
    timezone: str = "UTC"
    send_hour: int = 6
    weekday: int = 0
    paused: bool = False
    # Send an email saying "nothing new today" rather than skipping silently.
    send_empty: bool = False

    def __post_init__(self) -> None:
        if self.frequency not in FREQUENCIES:
            raise ValueError(f"unknown digest frequency {self.frequency!r}")
        if not 0 <= self.send_hour <= 23:
            raise ValueError("send_hour is an hour of the day, 0 to 23")
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday is 0 (Monday) to 6 (Sunday)")
        zone(self.timezone)  # raises ValueError for an unknown zone

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)


@dataclass(frozen=True)
class Slot:
    """One digest of one user: its key, the instant it is due (UTC), and why it is skipped if so."""

    key: str
    at: datetime
    skip: str | None = None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name like Europe/Paris"
        ) from None


def period_key(user_id: str, schedule: Schedule, day: date) -> str:
    """The key of the digest for the user's local ``day``: one per day, or per ISO week."""
    if schedule.frequency == "daily":
        return f"{user_id}/{day:%Y-%m-%d}"
    if schedule.frequency == "weekly":
        year, week, _ = day.isocalendar()
        return f"{user_id}/{year}-W{week:02d}"
    raise ValueError(f"no digests for frequency {schedule.frequency!r}")


def send_time(schedule: Schedule, day: date) -> datetime:
    """The instant (UTC) of ``send_hour`` on the user's local ``day``.

    On a day when clocks spring forward past that hour, the hour read with the earlier offset is
    used (02:30 becomes 03:30); when they fall back, its first occurrence: one instant either way.
    """
    local = datetime.combine(day, time(schedule.send_hour), tzinfo=schedule.tz)
    return local.astimezone(UTC)


def arxiv_holidays(year: int) -> dict[date, str]:
    """The US holidays on which arXiv makes no announcement (its published schedule, by rule).

    arXiv publishes the dates each year (info.arxiv.org/help/availability); add one-off closures with
    the ``RECOMMEND_ARXIV_EXTRA_HOLIDAYS`` setting.
    """
    november_first = date(year, 11, 1)
    first_thursday = november_first + timedelta(days=(3 - november_first.weekday()) % 7)
    return {
        date(year, 1, 1): "New Year's Day",
        date(year, 6, 19): "Juneteenth",
        date(year, 7, 4): "Independence Day",
        first_thursday + timedelta(weeks=3): "Thanksgiving",
        date(year, 12, 25): "Christmas Day",
    }


def arxiv_closure(instant: datetime, extra_holidays: Mapping[date, str] = {}) -> str | None:  # noqa: B006 - read only
    """Why arXiv announces nothing new for a digest at ``instant``, or None on announcement days."""
    day = instant.astimezone(ARXIV_TIMEZONE).date()
    if day.weekday() >= 5:
        return "arXiv announces no new papers on weekends"
    holiday = extra_holidays.get(day) or arxiv_holidays(day.year).get(day)
    if holiday:
        return f"arXiv holiday ({holiday}): no new papers announced"
    return None


def _days(first: date, last: date) -> Iterator[date]:
    while first <= last:
        yield first
        first += timedelta(days=1)


def due_slots(
    user_id: str,
    schedule: Schedule,
    after: datetime,
    now: datetime,
    extra_holidays: Mapping[date, str] = {},  # noqa: B006 - read only
) -> list[Slot]:
    """Every digest due in ``(after, now]``, oldest first, each with its skip reason if any.

    ``after`` is when the previous digest was due (or the schedule started): a scheduler that was
    down for three days gets the three missed digests, once each, and a scheduler ticking every
    minute gets each digest once.
    """
    if schedule.frequency == "off" or now <= after:
        return []
    tz = schedule.tz
    # One day of margin on each side: the local dates of two UTC instants, whatever the offset.
    first = after.astimezone(tz).date() - timedelta(days=1)
    last = now.astimezone(tz).date() + timedelta(days=1)
    slots = []
    for day in _days(first, last):
        if schedule.frequency == "weekly" and day.weekday() != schedule.weekday:
            continue
        at = send_time(schedule, day)
        if not after < at <= now:
            continue
        skip = None
        if schedule.paused:
            skip = "paused"
        elif schedule.frequency == "daily":
            skip = arxiv_closure(at, extra_holidays)
        slots.append(Slot(period_key(user_id, schedule, day), at, skip))
    return slots


def on_demand_key(user_id: str, now: datetime) -> str:
    """The key of a digest asked for now (``paperwire digest --now``), outside the schedule."""
    return f"{user_id}/now-{now:%Y%m%dT%H%M%S%f}"
