"""Which app tenant an event is about; only alerts for a tenant with a URL are queued; one
alert per threshold per period whichever event types report it; queued forwards resume when
an app starts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from {{ cookiecutter.package_name }}.alerts.service import Alerts, app_alerts
from localcycles import LocalCyclesServer
from support.tenancy_kit import budget_scope, cycles_tenant_of
from support.webhook_receiver import webhook_receiver


def body(
    event_id: str,
    tenant: str,
    event_type: str = "budget.threshold_crossed",
    threshold: float = 0.95,
    **extra: Any,
) -> bytes:
    return json.dumps({
        "event_id": event_id, "event_type": event_type, "tenant_id": cycles_tenant_of(tenant),
        "scope": budget_scope(tenant).upper(), "data": {"threshold": threshold}, **extra,
    }).encode()  # fmt: skip


def queuing(alerts: Alerts) -> Alerts:
    alerts.forwarder.kick = lambda: None  # type: ignore[method-assign]  # queue only
    alerts.store.set_webhook("acme", "http://127.0.0.1:9/hook", "whsec_x")
    return alerts


def test_events_map_to_app_tenants_and_queue_only_alerts_with_a_url(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    alerts = app_alerts(make_app(cycles_server.base_url))
    alerts.forwarder.kick = lambda: None  # type: ignore[method-assign]  # queue only
    alerts.store.set_webhook("acme", "http://127.0.0.1:9/hook", "whsec_x")
    first = alerts.receive(body("evt_1", "acme"))
    assert (first.tenant, first.forwarded, first.duplicate) == ("acme", True, False)
    assert alerts.receive(body("evt_1", "acme")).duplicate
    assert alerts.receive(body("evt_2", "globex")).forwarded is False  # no URL
    assert alerts.receive(body("evt_3", "acme", "tenant.created")).forwarded is False
    unknown = json.loads(body("evt_4", "acme"))
    unknown["scope"] = "tenant:someone-else"
    assert alerts.receive(json.dumps(unknown).encode()).tenant is None
    assert alerts.store.pending() == 1


def test_forwards_left_by_an_earlier_process_start_the_worker_on_the_next_event(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    alerts = app_alerts(make_app(cycles_server.base_url))
    kicked: list[bool] = []
    alerts.forwarder.kick = lambda: kicked.append(True)  # type: ignore[method-assign]
    alerts.receive(body("evt_1", "acme", "tenant.created"))
    assert kicked == []  # nothing to send
    alerts.store.accept("evt_0", ("acme", "evt_0", "budget.threshold_crossed", b"{}"))
    alerts.receive(body("evt_2", "acme", "tenant.created"))
    assert kicked == [True]


EXHAUSTED = "budget.exhausted"
CROSSED = "budget.threshold_crossed"
DAY_1, DAY_2 = "2026-12-02T10:00:00.000Z", "2026-12-03T00:00:01Z"


@pytest.mark.parametrize("first", [CROSSED, EXHAUSTED])
def test_one_100_percent_alert_per_period_whichever_event_comes_first(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], first: str
) -> None:
    """The reference server says budget.exhausted; the development server also says
    threshold_crossed at 1.0: the tenant hears of it once per period."""
    alerts = queuing(app_alerts(make_app(cycles_server.base_url)))
    second = EXHAUSTED if first == CROSSED else CROSSED
    one = alerts.receive(body("evt_1", "acme", first, 1.0, timestamp=DAY_1))
    two = alerts.receive(body("evt_2", "acme", second, 1.0, timestamp=DAY_1))
    assert (one.forwarded, two.forwarded, two.duplicate) == (True, False, False)
    assert alerts.receive(body("evt_3", "acme", CROSSED, 0.95, timestamp=DAY_1)).forwarded
    assert alerts.store.pending() == 2
    # The next period (the UTC day without a plan): the crossing is news again.
    assert alerts.receive(body("evt_4", "acme", second, 1.0, timestamp=DAY_2)).forwarded
    assert not alerts.receive(body("evt_5", "acme", first, 1.0, timestamp=DAY_2)).forwarded
    assert alerts.store.pending() == 3


def test_a_restarted_app_sends_what_an_earlier_process_left_queued(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    with webhook_receiver() as receiver:
        before = app_alerts(make_app(cycles_server.base_url))
        before.forwarder.kick = lambda: None  # type: ignore[method-assign]  # "stopped" first
        before.store.set_webhook("acme", receiver.url, "whsec_x")
        assert before.receive(body("evt_1", "acme")).forwarded
        # A new process on the same journal directory, no new event: it delivers at start.
        after = app_alerts(make_app(cycles_server.base_url, BUDGET_ALERTS_RESUME="true"))
        (got,) = receiver.wait_for(1)
        after.forwarder.stop()
    assert json.loads(got.body)["id"] == "evt_1"
    assert after.store.pending() == 0


def test_tests_resume_nothing_unless_asked(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    before = queuing(app_alerts(make_app(cycles_server.base_url)))
    before.receive(body("evt_1", "acme"))
    after = app_alerts(make_app(cycles_server.base_url))
    assert after.forwarder._thread is None and after.store.pending() == 1


# --- thresholds the app sees in the balances Cycles answers ----------------------------

NOON_1 = datetime(2026, 12, 2, 12, tzinfo=UTC)
NOON_2 = NOON_1 + timedelta(days=1)


def forwarded(alerts: Alerts) -> list[dict[str, Any]]:
    return [json.loads(row.body) for row in alerts.store.claim_due(lease_s=60, limit=100)]


def test_the_app_raises_each_threshold_it_sees_crossed_once_per_period(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    alerts = queuing(app_alerts(make_app(cycles_server.base_url)))
    assert alerts.observe("acme", 1000, 201, NOON_1) == []  # 79.9% used
    (at_80,) = alerts.observe("acme", 1000, 200, NOON_1)  # 80% exactly
    assert (at_80.event_type, at_80.threshold) == (CROSSED, 0.8)
    assert alerts.observe("acme", 1000, 150, NOON_1) == []  # 85%: 80% is raised already
    both = alerts.observe("acme", 1000, 0, NOON_1)  # past 95% and 100% at once
    assert [(e.event_type, e.threshold) for e in both] == [(CROSSED, 0.95), (EXHAUSTED, 1.0)]
    assert alerts.observe("acme", 1000, -40, NOON_1) == []  # into debt: nothing new
    sent = forwarded(alerts)
    assert [(a["type"], a["threshold"], a["tenant"]) for a in sent] == [
        (CROSSED, 0.8, "acme"), (CROSSED, 0.95, "acme"), (EXHAUSTED, 1.0, "acme"),
    ]  # fmt: skip
    assert sent[0]["allocated_usd_microcents"] == 1000
    assert sent[0]["remaining_usd_microcents"] == 200
    # The next period (the UTC day, without a plan) re-arms every threshold.
    assert [e.threshold for e in alerts.observe("acme", 1000, 100, NOON_2)] == [0.8]


def test_a_crossing_the_app_raised_is_not_raised_again_by_the_cycles_event_or_another_worker(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(cycles_server.base_url)
    alerts = queuing(app_alerts(app))
    assert len(alerts.observe("acme", 1000, 100, NOON_1)) == 1
    # The development server's event for the same crossing: recorded, not forwarded again.
    late = alerts.receive(body("evt_1", "acme", CROSSED, 0.8, timestamp=NOON_1.isoformat()))
    assert (late.duplicate, late.forwarded) == (False, False)
    # Another worker (its own memory, the same store) sees the same crossing: nothing new.
    other = Alerts(alerts.settings, alerts.store, alerts.forwarder, alerts.period_of)
    assert other.observe("acme", 1000, 90, NOON_1) == []
    assert len(forwarded(alerts)) == 1


def test_a_budget_without_an_allocation_raises_nothing(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    alerts = queuing(app_alerts(make_app(cycles_server.base_url)))
    assert alerts.observe("acme", 0, -500, NOON_1) == []
    assert alerts.store.pending() == 0


def test_a_tenant_without_a_url_gets_its_crossing_recorded_not_queued(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    alerts = app_alerts(make_app(cycles_server.base_url))
    alerts.forwarder.kick = lambda: None  # type: ignore[method-assign]
    assert [e.threshold for e in alerts.observe("globex", 1000, 100, NOON_1)] == [0.8]
    assert alerts.store.pending() == 0
    # Registering a URL later does not replay a crossing of the past.
    alerts.store.set_webhook("globex", "http://127.0.0.1:9/hook", "whsec_x")
    assert alerts.observe("globex", 1000, 90, NOON_1) == []
