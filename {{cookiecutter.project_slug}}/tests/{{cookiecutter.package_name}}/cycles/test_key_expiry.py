"""How a runtime key's end is written and told (key_expiry.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from {{ cookiecutter.package_name }}.config import parse_instant
from {{ cookiecutter.package_name }}.cycles.key_expiry import describe, encode, expiry_after, is_due, iso

NOW = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("left", "said"),
    [
        (timedelta(days=90) - timedelta(seconds=1), "expires 2027-03-02 (90 days left)"),
        (timedelta(days=1, hours=2), "expires 2026-12-03 (1 day left)"),
        (timedelta(hours=5), "expires 2026-12-02 (in 5 hours)"),
        (timedelta(minutes=1), "expires 2026-12-02 (in 1 hour)"),
        (timedelta(0), "expired 2026-12-02"),
        (-timedelta(days=3), "expired 2026-11-29"),
    ],
)
def test_describe_tells_the_days_left(left: timedelta, said: str) -> None:
    assert describe(NOW + left, NOW) == said


def test_an_unknown_end_is_said_to_be_unknown() -> None:
    assert describe(None, NOW) == "no expiry known"
    assert not is_due(None, NOW, 14)


def test_due_within_the_warning_window_inclusive() -> None:
    assert is_due(NOW + timedelta(days=14), NOW, 14)
    assert not is_due(NOW + timedelta(days=14, seconds=1), NOW, 14)
    assert is_due(NOW - timedelta(days=1), NOW, 0)
    assert not is_due(NOW + timedelta(seconds=1), NOW, 0)


def test_ends_are_whole_utc_seconds_that_read_back_as_written() -> None:
    ends = expiry_after(NOW, 90)
    assert iso(ends) == "2027-03-02T09:30:15Z"
    assert parse_instant(iso(ends)) == ends
    other_zone = parse_instant("2027-03-02T10:30:15+01:00")
    assert other_zone == ends and other_zone.tzinfo == UTC
    assert encode({"acme": ends, "globex": ends}) == (
        "acme=2027-03-02T09:30:15Z,globex=2027-03-02T09:30:15Z"
    )
    with pytest.raises(ValueError):
        parse_instant("2027-03-02T09:30:15")  # no offset: which zone?
