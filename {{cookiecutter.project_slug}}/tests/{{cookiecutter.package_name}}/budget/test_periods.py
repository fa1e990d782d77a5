"""Budget periods: the UTC start and next reset of the period containing an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from {{ cookiecutter.package_name }}.budget.periods import PERIODS, period_bounds


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", utc(2027, 3, 2, 10, 30), utc(2027, 3, 2), utc(2027, 3, 3)),
        ("day", utc(2027, 3, 2), utc(2027, 3, 2), utc(2027, 3, 3)),
        ("day", utc(2027, 12, 31, 23, 59, 59), utc(2027, 12, 31), utc(2028, 1, 1)),
        # 2027-03-03 is a Wednesday: its ISO week began on Monday 1 March.
        ("week", utc(2027, 3, 3, 12), utc(2027, 3, 1), utc(2027, 3, 8)),
        ("week", utc(2027, 3, 1), utc(2027, 3, 1), utc(2027, 3, 8)),
        ("week", utc(2027, 3, 7, 23, 59), utc(2027, 3, 1), utc(2027, 3, 8)),
        ("week", utc(2027, 12, 29), utc(2027, 12, 27), utc(2028, 1, 3)),
        ("month", utc(2027, 3, 15, 8), utc(2027, 3, 1), utc(2027, 4, 1)),
        ("month", utc(2027, 12, 31, 23), utc(2027, 12, 1), utc(2028, 1, 1)),
        ("month", utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),
        ("month", utc(2027, 4, 1), utc(2027, 4, 1), utc(2027, 5, 1)),
    ],
)
def test_bounds_of_the_period_containing_now(
    period: str, now: datetime, start: datetime, end: datetime
) -> None:
    assert period_bounds(period, now) == (start, end)
    assert start <= now < end


def test_a_period_that_never_resets_has_no_bounds() -> None:
    assert period_bounds("none", utc(2027, 3, 2)) == (None, None)


def test_boundaries_are_utc_whatever_the_offset_of_now() -> None:
    # 01:00 on 1 April in UTC+2 is still 31 March in UTC.
    now = datetime(2027, 4, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    start, end = period_bounds("month", now)
    assert (start, end) == (utc(2027, 3, 1), utc(2027, 4, 1))
    assert start is not None and start.tzinfo is UTC


def test_every_period_has_bounds_or_none() -> None:
    assert PERIODS == ("day", "week", "month", "none")
    for period in PERIODS[:-1]:
        start, end = period_bounds(period, utc(2027, 6, 15, 12))
        assert start is not None and end is not None and start < end


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        period_bounds("day", datetime(2027, 3, 2))


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown period 'year'"):
        period_bounds("year", utc(2027, 3, 2))
