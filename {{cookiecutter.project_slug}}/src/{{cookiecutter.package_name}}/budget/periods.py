"""Budget periods: which billing period an instant falls in, in UTC.

A plan gives each tenant an allocation per period; at the period's end the spent amount
goes back to zero (see ``budget/rollover.py``). Boundaries are UTC so every worker, the
CLI and the compose scheduler agree on them whatever the host's time zone: days start at
00:00, ISO weeks on Monday 00:00, months on the 1st at 00:00. ``none`` never resets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# The names are settings' values (BUDGET_PLANS), so they are defined with the settings.
from ..config import PERIODS, Period

__all__ = ["PERIODS", "Period", "period_bounds"]


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The UTC start and end (the next reset) of the ``period`` containing ``now``.

    ``now`` must be timezone-aware (a naive time has no defined UTC instant). ``none``
    is ``(None, None)``: the allocation never resets.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r} (one of {', '.join(PERIODS)})")
    if period == "none":
        return None, None
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)
