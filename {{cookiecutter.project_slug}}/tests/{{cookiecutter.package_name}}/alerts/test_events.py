"""Reading Cycles' events; what a tenant receives."""

from __future__ import annotations

import json

import pytest

from {{ cookiecutter.package_name }}.alerts.events import alert_payload, parse_event

EVENT = {
    "event_id": "evt_1",
    "event_type": "budget.threshold_crossed",
    "category": "budget",
    "timestamp": "2026-12-02T10:00:00.000Z",
    "tenant_id": "acme",
    "scope": "tenant:acme",
    "source": "cycles-server",
    "data": {"scope": "tenant:acme", "unit": "USD_MICROCENTS", "threshold": 0.8,
             "utilization": 0.81, "allocated": 100, "remaining": 19, "spent": 81,
             "reserved": 0, "direction": "rising"},
}  # fmt: skip


def test_an_event_is_read_with_its_threshold() -> None:
    event = parse_event(json.dumps(EVENT).encode())
    assert (event.event_id, event.tenant_id, event.scope) == ("evt_1", "acme", "tenant:acme")
    assert event.threshold == 0.8 and event.is_alert


def test_exhausted_counts_as_the_full_threshold_and_others_are_not_alerts() -> None:
    exhausted = {**EVENT, "event_type": "budget.exhausted", "data": {"scope": "tenant:acme"}}
    assert parse_event(json.dumps(exhausted).encode()).threshold == 1.0
    other = parse_event(json.dumps({**EVENT, "event_type": "tenant.created"}).encode())
    assert not other.is_alert


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", json.dumps({**EVENT, "event_id": ""}).encode(),
             json.dumps({k: v for k, v in EVENT.items() if k != "tenant_id"}).encode()],
)  # fmt: skip
def test_a_body_that_is_no_event_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_event(body)


def test_the_tenant_payload_names_the_app_tenant_and_usd_microcents() -> None:
    payload = json.loads(alert_payload(parse_event(json.dumps(EVENT).encode()), "acme"))
    assert payload == {
        "id": "evt_1", "type": "budget.threshold_crossed", "tenant": "acme", "threshold": 0.8,
        "utilization": 0.81, "allocated_usd_microcents": 100, "spent_usd_microcents": 81,
        "remaining_usd_microcents": 19,
    }  # fmt: skip
