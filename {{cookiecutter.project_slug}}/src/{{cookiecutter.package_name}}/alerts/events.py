"""Cycles' webhook events as the receiver reads them, and what the app forwards.

An event is the reference's ``Event`` JSON (cycles-server-admin model): ``event_id``,
``event_type``, ``tenant_id``, ``scope``, ``data``. Budget alerts are
``budget.threshold_crossed`` (``data.threshold``: the fraction crossed) and
``budget.exhausted`` (the reference runtime server's event when remaining reaches 0; its data
carries ``threshold`` 1.0). Other event types are logged and counted, never forwarded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

THRESHOLD_CROSSED = "budget.threshold_crossed"
EXHAUSTED = "budget.exhausted"
ALERT_TYPES = (THRESHOLD_CROSSED, EXHAUSTED)
MAX_EVENT_ID_CHARS = 128


@dataclass(frozen=True)
class CyclesEvent:
    event_id: str
    event_type: str
    tenant_id: str
    scope: str
    data: dict[str, Any]
    timestamp: str = ""  # when Cycles raised it (ISO 8601), as the event says

    def occurred_at(self, received_at: datetime) -> datetime:
        """When the event happened: its timestamp, else ``received_at`` (a retried delivery
        still belongs to the period it happened in)."""
        try:
            when = datetime.fromisoformat(self.timestamp)
        except ValueError:
            return received_at
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    @property
    def threshold(self) -> float | None:
        value = self.data.get("threshold")
        if self.event_type == EXHAUSTED and value is None:
            return 1.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    @property
    def is_alert(self) -> bool:
        return self.event_type in ALERT_TYPES


def parse_event(body: bytes) -> CyclesEvent:
    """The event in ``body``, or ValueError naming what is missing."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("the body is not a JSON object")
    fields = {}
    for name in ("event_id", "event_type", "tenant_id"):
        value = raw.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_EVENT_ID_CHARS:
            raise ValueError(f"{name} is missing or invalid")
        fields[name] = value
    data = raw.get("data")
    scope = raw.get("scope") or (data.get("scope") if isinstance(data, dict) else None)
    return CyclesEvent(
        fields["event_id"],
        fields["event_type"],
        fields["tenant_id"],
        scope.lower() if isinstance(scope, str) else "",
        data if isinstance(data, dict) else {},
        raw["timestamp"] if isinstance(raw.get("timestamp"), str) else "",
    )


def alert_payload(event: CyclesEvent, tenant: str) -> bytes:
    """What a tenant's URL receives: the alert in the app's terms (its tenant, USD
    microcents), with the Cycles event id (the tenant's de-duplication key)."""
    data = event.data
    payload = {
        "id": event.event_id,
        "type": event.event_type,
        "tenant": tenant,
        "threshold": event.threshold,
        "utilization": data.get("utilization"),
        "allocated_usd_microcents": data.get("allocated"),
        "spent_usd_microcents": data.get("spent"),
        "remaining_usd_microcents": data.get("remaining"),
    }
    clean = {key: value for key, value in payload.items() if value is not None}
    return json.dumps(clean, separators=(",", ":")).encode("utf-8")
