"""JSON shapes on the wire: amounts and timestamps. Optional fields are omitted, never null:
runcycles' models forbid unknown fields and reject null."""

from __future__ import annotations

import datetime as dt
from typing import Any

Json = dict[str, Any]


def amount(unit: str, value: int) -> Json:
    return {"unit": unit, "amount": value}


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    """ISO 8601 date-time -> epoch ms; naive values are taken as UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)
