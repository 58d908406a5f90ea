"""digest.py: which digests are due, under which key, and why one is skipped (pure, clock given)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from paperwire_recommend.digest import (
    Schedule,
    arxiv_closure,
    arxiv_holidays,
    due_slots,
    send_time,
)

USER = "user-1"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def keys(slots) -> list[str]:
    return [s.key for s in slots]


def test_a_daily_digest_is_due_once_at_the_local_hour() -> None:
    paris = Schedule(timezone="Europe/Paris", send_hour=7)  # UTC+1 in November
    after = utc(2026, 11, 23, 12)  # Monday noon

    assert due_slots(USER, paris, after, utc(2026, 11, 24, 5, 59)) == []
    [slot] = due_slots(USER, paris, after, utc(2026, 11, 24, 6, 0))
    assert slot.key == "user-1/2026-11-24" and slot.at == utc(2026, 11, 24, 6) and slot.skip is None


def test_ticking_every_minute_yields_each_digest_once() -> None:
    schedule = Schedule(timezone="America/Los_Angeles", send_hour=8)
    start = utc(2026, 11, 23, 0)
    seen: list[str] = []
    after = start
    for minute in range(0, 3 * 24 * 60, 7):  # a scheduler ticking for three days
        now = start + timedelta(minutes=minute)
        slots = due_slots(USER, schedule, after, now)
        seen += keys(slots)
        if slots:
            after = slots[-1].at
    assert seen == ["user-1/2026-11-23", "user-1/2026-11-24", "user-1/2026-11-25"]


def test_a_scheduler_down_for_three_days_gets_each_missed_digest_once() -> None:
    schedule = Schedule(timezone="Asia/Tokyo", send_hour=9)
    last_digest = send_time(schedule, date(2026, 11, 17))  # Tuesday's

    slots = due_slots(USER, schedule, last_digest, utc(2026, 11, 20, 12))  # back on Friday

    assert keys(slots) == ["user-1/2026-11-18", "user-1/2026-11-19", "user-1/2026-11-20"]
    assert [s.at for s in slots] == sorted(s.at for s in slots)


def test_daily_digests_skip_weekends_in_us_eastern_time_with_the_reason() -> None:
    schedule = Schedule(timezone="UTC", send_hour=6)

    slots = due_slots(USER, schedule, utc(2026, 12, 4, 7), utc(2026, 12, 8, 7))  # Fri .. Tue

    assert [(s.key, s.skip) for s in slots] == [
        ("user-1/2026-12-05", "arXiv announces no new papers on weekends"),
        ("user-1/2026-12-06", "arXiv announces no new papers on weekends"),
        ("user-1/2026-12-07", None),
        ("user-1/2026-12-08", None),
    ]


def test_the_arxiv_day_is_read_in_us_eastern_time_not_the_users() -> None:
    # Monday 07:00 in Tokyo is still Sunday evening in New York: nothing new announced yet.
    tokyo = Schedule(timezone="Asia/Tokyo", send_hour=7)
    [monday] = due_slots(USER, tokyo, utc(2026, 12, 6, 12), utc(2026, 12, 7, 0))
    assert monday.key == "user-1/2026-12-07" and monday.skip is not None
    # Saturday 07:00 in Tokyo is Friday evening in New York: Thursday night's announcement.
    [saturday] = due_slots(USER, tokyo, utc(2026, 12, 4, 12), utc(2026, 12, 5, 0))
    assert saturday.key == "user-1/2026-12-05" and saturday.skip is None


def test_an_arxiv_holiday_is_skipped_with_its_name() -> None:
    assert date(2026, 11, 26) in arxiv_holidays(2026)  # Thanksgiving: fourth Thursday
    assert date(2027, 11, 25) in arxiv_holidays(2027)
    schedule = Schedule(timezone="America/New_York", send_hour=9)

    [slot] = due_slots(USER, schedule, utc(2026, 11, 25, 20), utc(2026, 11, 26, 20))

    assert slot.skip == "arXiv holiday (Thanksgiving): no new papers announced"


def test_extra_holidays_from_settings_are_skipped_too() -> None:
    extra = {date(2026, 12, 24): "winter closure"}

    assert arxiv_closure(utc(2026, 12, 24, 15), extra) == (
        "arXiv holiday (winter closure): no new papers announced"
    )
    assert arxiv_closure(utc(2026, 12, 23, 15), extra) is None


def test_a_weekly_digest_comes_on_the_chosen_day_once_per_iso_week() -> None:
    thursday = Schedule(frequency="weekly", weekday=3, timezone="Europe/Berlin", send_hour=18)

    slots = due_slots(USER, thursday, utc(2026, 11, 1), utc(2026, 11, 30))

    assert keys(slots) == [
        "user-1/2026-W45",
        "user-1/2026-W46",
        "user-1/2026-W47",
        "user-1/2026-W48",
    ]
    assert all(s.at.astimezone(thursday.tz).weekday() == 3 for s in slots)
    # Weekly digests are not bound to arXiv days: Thanksgiving week's still goes out.
    assert all(s.skip is None for s in slots)


def test_paused_digests_are_recorded_as_skipped_and_off_has_none() -> None:
    paused = Schedule(paused=True)
    [slot] = due_slots(USER, paused, utc(2026, 11, 23, 12), utc(2026, 11, 24, 12))
    assert slot.skip == "paused"

    assert due_slots(USER, Schedule(frequency="off"), utc(2026, 11, 1), utc(2026, 12, 1)) == []


@pytest.mark.parametrize(
    "zone, day, hour, expected_utc",
    [
        # New York springs forward on 8 March 2026 at 02:00: 02:30 does not exist that day.
        ("America/New_York", date(2026, 3, 8), 2, utc(2026, 3, 8, 7)),
        ("America/New_York", date(2026, 3, 7), 7, utc(2026, 3, 7, 12)),  # EST, UTC-5
        ("America/New_York", date(2026, 3, 9), 7, utc(2026, 3, 9, 11)),  # EDT, UTC-4
        # New York falls back on 1 November 2026: 01:00 happens twice, the first one counts.
        ("America/New_York", date(2026, 11, 1), 1, utc(2026, 11, 1, 5)),
        # Berlin changes a different weekend than New York.
        ("Europe/Berlin", date(2026, 3, 28), 7, utc(2026, 3, 28, 6)),
        ("Europe/Berlin", date(2026, 3, 29), 7, utc(2026, 3, 29, 5)),
        # Southern hemisphere: Sydney leaves daylight time on 5 April 2026.
        ("Australia/Sydney", date(2026, 4, 4), 7, utc(2026, 4, 3, 20)),
        ("Australia/Sydney", date(2026, 4, 6), 7, utc(2026, 4, 5, 21)),
    ],
)
def test_the_local_hour_is_kept_across_dst_changes(
    zone: str, day: date, hour: int, expected_utc: datetime
) -> None:
    assert send_time(Schedule(timezone=zone, send_hour=hour), day) == expected_utc


def test_each_day_around_a_dst_change_has_exactly_one_digest() -> None:
    schedule = Schedule(timezone="America/New_York", send_hour=2)  # the hour that is skipped

    slots = due_slots(USER, schedule, utc(2026, 3, 5), utc(2026, 3, 12))

    days = [s.key.split("/")[1] for s in slots]
    assert days == [f"2026-03-{d:02d}" for d in range(5, 12)]
    assert len({s.at for s in slots}) == len(slots)


@pytest.mark.parametrize(
    "changes",
    [{"timezone": "Mars/Olympus_Mons"}, {"send_hour": 24}, {"weekday": 7}, {"frequency": "hourly"}],
)
def test_an_invalid_schedule_is_refused(changes: dict) -> None:
    with pytest.raises(ValueError):
        Schedule(**changes)
