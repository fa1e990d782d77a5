"""Budget alert settings: the thresholds, and how Cycles' events reach the app.

``BUDGET_ALERT_THRESHOLDS``: fractions of a period's allocation (``0.8,0.95,1.0``); crossing
each raises one alert per period. ``CYCLES_WEBHOOK_URL``: the app's receiver as the Cycles
events service reaches it (``https://app.example.com/webhooks/cycles``); `flask cycles
provision` subscribes it. ``CYCLES_WEBHOOK_SECRET``: the subscription's signing secret, which
the receiver verifies; without it the receiver answers 404.
``BUDGET_WEBHOOK_ALLOW_NETWORKS``: internal networks a tenant's alert URL may still point at
(``alerts/destinations.py`` refuses every other internal address).
``BUDGET_ALERTS_RESUME``: an app's start sends the forwards a stopped process left queued.
``BUDGET_ALERT_SIGNING_KEY``: derives tenants' alert secrets, so none is stored
(``alerts/tenant_secrets.py``).
"""

from __future__ import annotations

import ipaddress
from typing import TypedDict

from .config_values import ValueReader, quoted

DEFAULT_ALERT_THRESHOLDS = "0.8,0.95,1.0"
MAX_ALERT_THRESHOLDS = 10
# The secret signs every event: short ones can be guessed.
MIN_WEBHOOK_SECRET_CHARS = 16
# Every tenant's alert secret is derived from this key: as long as a random 256-bit one.
MIN_SIGNING_KEY_CHARS = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Outside production a tenant's URL may be on this machine (the offline end-to-end path).
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class AlertFields(TypedDict):
    budget_alert_thresholds: tuple[float, ...]
    cycles_webhook_url: str | None
    cycles_webhook_secret: str | None
    budget_webhook_allow_networks: tuple[Network, ...]
    budget_alerts_resume: bool
    budget_alert_signing_key: str | None


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``0.8,0.95,1.0`` -> (0.8, 0.95, 1.0): each in (0, 1], increasing, at most 10."""
    values = tuple(float(part) for part in text.split(","))
    if not 1 <= len(values) <= MAX_ALERT_THRESHOLDS:
        raise ValueError("count")
    if any(not 0.0 < value <= 1.0 for value in values):  # also refuses nan
        raise ValueError("range")
    if list(values) != sorted(set(values)):
        raise ValueError("order")
    return values


def parse_networks(text: str) -> tuple[Network, ...]:
    """``none``, or networks comma-separated (``127.0.0.0/8,::1``); ValueError otherwise."""
    if text.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise ValueError("empty entry")
    return tuple(ipaddress.ip_network(part) for part in parts)


def read_allow_networks(read: ValueReader, production: bool) -> tuple[Network, ...]:
    """BUDGET_WEBHOOK_ALLOW_NETWORKS: internal networks tenants' alert URLs may point at
    (production: none; otherwise loopback, so a receiver on this machine works)."""
    name = "BUDGET_WEBHOOK_ALLOW_NETWORKS"
    text = read.raw(name)
    if text is None:
        return () if production else LOOPBACK
    try:
        return parse_networks(text)
    except ValueError:
        read.note(
            name,
            f"{name}={quoted(text)} is invalid: expected none or networks, comma-separated "
            "(e.g. 127.0.0.0/8,::1/128)",
        )
        return ()


def read_alerts(read: ValueReader, app_env: str) -> AlertFields:
    text = read.raw("BUDGET_ALERT_THRESHOLDS") or DEFAULT_ALERT_THRESHOLDS
    try:
        thresholds = parse_thresholds(text)
    except ValueError:
        read.note(
            "BUDGET_ALERT_THRESHOLDS",
            f"BUDGET_ALERT_THRESHOLDS={quoted(text)} is invalid: expected up to "
            f"{MAX_ALERT_THRESHOLDS} increasing fractions in (0, 1], comma-separated "
            f"(e.g. {DEFAULT_ALERT_THRESHOLDS})",
        )
        thresholds = parse_thresholds(DEFAULT_ALERT_THRESHOLDS)
    url = read.url("CYCLES_WEBHOOK_URL")
    secret = read.raw("CYCLES_WEBHOOK_SECRET")
    if secret is not None and len(secret) < MIN_WEBHOOK_SECRET_CHARS:
        read.note(
            "CYCLES_WEBHOOK_SECRET",
            f"CYCLES_WEBHOOK_SECRET is too short: expected at least "
            f"{MIN_WEBHOOK_SECRET_CHARS} characters",
        )
    if url is not None and secret is None:
        read.note(
            "CYCLES_WEBHOOK_SECRET",
            "CYCLES_WEBHOOK_SECRET is required when CYCLES_WEBHOOK_URL is set (the receiver "
            "verifies every event with it)",
        )
    signing_key = read.raw("BUDGET_ALERT_SIGNING_KEY")
    if signing_key is not None and len(signing_key) < MIN_SIGNING_KEY_CHARS:
        read.note(
            "BUDGET_ALERT_SIGNING_KEY",
            f"BUDGET_ALERT_SIGNING_KEY is too short: expected at least {MIN_SIGNING_KEY_CHARS}"
            ' characters (python -c "import secrets; print(secrets.token_urlsafe(32))")',
        )
    return AlertFields(
        budget_alert_thresholds=thresholds,
        cycles_webhook_url=url,
        cycles_webhook_secret=secret,
        budget_webhook_allow_networks=read_allow_networks(read, app_env == "production"),
        # Tests start many apps in one process: each resumes only when a test asks.
        budget_alerts_resume=read.flag("BUDGET_ALERTS_RESUME", app_env != "testing"),
        budget_alert_signing_key=signing_key,
    )
