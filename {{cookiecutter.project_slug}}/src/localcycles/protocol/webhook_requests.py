"""Webhook subscription requests of the admin API (``POST /v1/admin/webhooks``), validated.

The subset the app uses, with the reference admin server's names and rules
(cycles-server-admin ``WebhookCreateRequest`` / ``WebhookThresholdConfig``): ``url`` (at
most 2048 characters) and a non-empty ``event_types`` are required; ``thresholds``
``.budget_utilization`` lists fractions in [0, 1]; ``signing_secret`` is generated when
omitted. Like the reference, an unknown field is a 400, never silently ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import invalid

# A dot-notation event type ("budget.threshold_crossed"): the reference's EventType values.
EVENT_TYPE_RE = re.compile(r"[a-z_]{1,32}\.[a-z_]{1,64}")
URL_RE = re.compile(r"https?://[^\s/?#@]+(/[^\s#]*)?", re.ASCII)
MAX_URL_CHARS = 2048
MAX_SECRET_CHARS = 256
MAX_THRESHOLDS = 16
CREATE_FIELDS = frozenset(
    {"name", "description", "url", "event_types", "event_categories", "scope_filter",
     "thresholds", "signing_secret", "headers", "retry_policy", "disable_after_failures",
     "metadata"}
)  # fmt: skip
# This server keeps only what it acts on: the rest of the reference's fields are accepted.
THRESHOLD_FIELDS = frozenset(
    {"budget_utilization", "burn_rate_multiplier", "burn_rate_window_seconds",
     "denial_rate_threshold", "expiry_rate_threshold", "auth_failure_rate_threshold",
     "rate_window_seconds"}
)  # fmt: skip


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    event_types: tuple[str, ...]
    budget_utilization: tuple[float, ...]
    signing_secret: str | None


def webhook_create(body: dict[str, Any]) -> WebhookSpec:
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized field: {unknown[0][:64]}")
    url = body.get("url")
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not URL_RE.fullmatch(url):
        raise invalid("url must be an http(s) URL of at most 2048 characters")
    return WebhookSpec(
        url=url,
        event_types=_event_types(body.get("event_types")),
        budget_utilization=_thresholds(body.get("thresholds")),
        signing_secret=_secret(body.get("signing_secret")),
    )


def _event_types(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise invalid("event_types must be a non-empty list")
    for item in value:
        if not isinstance(item, str) or not EVENT_TYPE_RE.fullmatch(item):
            raise invalid("event_types holds an unknown event type")
    return tuple(dict.fromkeys(value))


def _thresholds(value: object) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise invalid("thresholds must be an object")
    unknown = sorted(set(value) - THRESHOLD_FIELDS)
    if unknown:
        raise invalid(f"Unrecognized field: thresholds.{unknown[0][:64]}")
    levels = value.get("budget_utilization")
    if levels is None:
        return ()
    if not isinstance(levels, list) or len(levels) > MAX_THRESHOLDS:
        raise invalid(f"thresholds.budget_utilization must be a list of at most {MAX_THRESHOLDS}")
    out: list[float] = []
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise invalid("thresholds.budget_utilization values must be numbers")
        if not (math.isfinite(level) and 0.0 <= level <= 1.0):
            raise invalid("thresholds.budget_utilization values must be between 0.0 and 1.0")
        out.append(float(level))
    return tuple(sorted(set(out)))


def _secret(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SECRET_CHARS:
        raise invalid(f"signing_secret must be a string of 1-{MAX_SECRET_CHARS} characters")
    return value
