"""When the app's Cycles runtime keys end, and what to say about it before they do.

The reference admin server gives every API key an expiry (90 days after creation unless the
request sets ``expires_at``), and the runtime server then refuses the key with 401. No
runtime call reports a key's expiry, so the app learns it where it is known:
``flask cycles provision`` sets it when it creates a key (``CYCLES_KEY_TTL_DAYS``), asks the
admin API for it when it reuses one, and records it in ``CYCLES_KEY_EXPIRES_AT`` beside the
keys. ``/readyz`` and ``flask cycles check-keys`` read that setting and call no one, so a
readiness probe costs no admin call and the app needs no admin key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app

from ..config import Settings, parse_instant
from . import tenancy

CLOCK = "wall_clock"  # tests set a fixed wall clock here (weeks pass without waiting)


def now(app: Flask | None = None) -> datetime:
    """The wall-clock time (UTC) as the app sees it: the clock set on the app, if any."""
    extensions = (app if app is not None else current_app).extensions
    clock: Callable[[], datetime] | None = extensions.get(CLOCK)
    return clock() if clock is not None else datetime.now(UTC)


DAY_S = 86_400


def iso(moment: datetime) -> str:
    """``moment`` as the admin API and the settings write it: ``2027-03-02T10:00:00Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def expiry_after(now: datetime, days: int) -> datetime:
    """The end of a key made at ``now`` that lives ``days`` days (whole seconds)."""
    return (now + timedelta(days=days)).astimezone(UTC).replace(microsecond=0)


def encode(expiries: Mapping[str, datetime]) -> str:
    """The ``CYCLES_KEY_EXPIRES_AT`` value: ``cycles-tenant=date-time`` pairs."""
    return ",".join(f"{tenant}={iso(moment)}" for tenant, moment in expiries.items())


def parse(text: object) -> datetime | None:
    """A date-time the admin API sent, or None when it sent none (or nothing readable)."""
    if not isinstance(text, str):
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None


def days_left(expires_at: datetime, now: datetime) -> float:
    return (expires_at - now).total_seconds() / DAY_S


def is_due(expires_at: datetime | None, now: datetime, warn_days: int) -> bool:
    """Whether a key ending at ``expires_at`` is within ``warn_days`` days of its end."""
    return expires_at is not None and days_left(expires_at, now) <= warn_days


def describe(expires_at: datetime | None, now: datetime) -> str:
    """``expires 2027-03-02 (89 days left)``, ``expired 2026-11-30``, or (None: no end
    recorded and none reported) ``no expiry known``."""
    if expires_at is None:
        return "no expiry known"
    day = expires_at.date().isoformat()
    left = days_left(expires_at, now)
    if left <= 0:
        return f"expired {day}"
    if left < 1:
        return f"expires {day} (in {_count(max(1, round(left * 24)), 'hour')})"
    # Rounded: a 90-day key made a moment ago has 90 days left, not 89.
    return f"expires {day} ({_count(round(left), 'day')} left)"


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


@dataclass(frozen=True)
class KeyCheck:
    """What the recorded expiries say now: keys already ended, keys ending soon."""

    expired: tuple[str, ...]  # one sentence each
    expiring: tuple[str, ...]

    @property
    def warning(self) -> str | None:
        return " ".join(self.expiring) or None


def check(settings: Settings, now: datetime) -> KeyCheck:
    """The recorded expiry of every runtime key the app uses, against ``now``."""
    expired: list[str] = []
    expiring: list[str] = []
    used = dict.fromkeys(tenancy.cycles_tenant(settings, t) for t in settings.tenants)
    for cycles_tenant in used:
        expires_at = settings.cycles_key_expires_at.get(cycles_tenant)
        if expires_at is None:
            continue
        what = f"The Cycles API key of {cycles_tenant} {describe(expires_at, now)}"
        if days_left(expires_at, now) <= 0:
            expired.append(f"{what}: run `flask cycles provision` for a new one.")
        elif is_due(expires_at, now, settings.cycles_key_warn_days):
            expiring.append(f"{what}: run `flask cycles provision` to rotate it.")
    return KeyCheck(tuple(expired), tuple(expiring))
