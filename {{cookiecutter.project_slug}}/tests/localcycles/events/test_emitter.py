"""Threshold detection: each level once per period, re-armed when spent falls (a reset);
budget.exhausted as the reference emits it: remaining from above 0 to exactly 0."""

from __future__ import annotations

import json

import pytest

from localcycles import LocalLedger
from localcycles.events.delivery import Deliverer, Delivery
from localcycles.events.emitter import Emitter
from localcycles.events.store import WebhookStore
from localcycles.protocol.webhook_requests import WebhookSpec
from support.localcycles_kit import LC_TENANT, LC_UNIT, FakeClock

SPEC = WebhookSpec("http://127.0.0.1:1/hook", ("budget.threshold_crossed",), (0.8, 0.95, 1.0), None)
ALLOCATED = 1_000


class Recorded(Deliverer):
    """Keeps what would be delivered (the HTTP part is test_delivery's)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.sent.append(delivery)


@pytest.fixture
def setup(lc_ledger: LocalLedger, lc_clock: FakeClock) -> tuple[Emitter, Recorded]:
    lc_ledger.create_tenant(LC_TENANT)
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", LC_UNIT, allocated=ALLOCATED)
    recorded = Recorded()
    return Emitter(WebhookStore(lc_ledger.db), recorded, lc_clock), recorded


def spend(ledger: LocalLedger, spent: int, reserved: int = 0, debt: int = 0) -> None:
    with ledger.db.write() as conn:  # the figures only: how spend got there is the ledger's
        conn.execute(
            "UPDATE budgets SET spent = ?, reserved = ?, debt = ? WHERE tenant_id = ?",
            (spent, reserved, debt, LC_TENANT),
        )


def thresholds(recorded: Recorded) -> list[float]:
    return [json.loads(d.body)["data"]["threshold"] for d in recorded.sent]


def test_nothing_fires_without_a_subscription(
    lc_ledger: LocalLedger, setup: tuple[Emitter, Recorded]
) -> None:
    emitter, recorded = setup
    spend(lc_ledger, ALLOCATED)
    emitter.changed(LC_TENANT)
    assert recorded.sent == []


def test_each_level_fires_once_per_period_and_again_after_a_reset(
    lc_ledger: LocalLedger, setup: tuple[Emitter, Recorded]
) -> None:
    emitter, recorded = setup
    sub = emitter.store.create(LC_TENANT, SPEC, 1)
    for spent in (500, 810, 820, 960, 1_000, 1_000):
        spend(lc_ledger, spent)
        emitter.changed(LC_TENANT)
    assert thresholds(recorded) == [0.8, 0.95, 1.0]
    spend(lc_ledger, 0)  # RESET_SPENT: a new period
    emitter.changed(LC_TENANT)
    spend(lc_ledger, 1_000)  # one jump crosses every level
    emitter.changed(LC_TENANT)
    assert thresholds(recorded) == [0.8, 0.95, 1.0, 0.8, 0.95, 1.0]
    event = json.loads(recorded.sent[-1].body)
    assert recorded.sent[-1].secret == sub.secret and recorded.sent[-1].url == sub.url
    assert event["event_type"] == "budget.threshold_crossed" and event["category"] == "budget"
    assert event["tenant_id"] == LC_TENANT and event["scope"] == f"tenant:{LC_TENANT}"
    assert event["event_id"] == recorded.sent[-1].event_id.strip()
    assert event["data"] == {
        "scope": f"tenant:{LC_TENANT}", "unit": LC_UNIT, "threshold": 1.0, "utilization": 1.0,
        "allocated": ALLOCATED, "remaining": 0, "spent": ALLOCATED, "reserved": 0,
        "direction": "rising",
    }  # fmt: skip
    assert len({d.event_id for d in recorded.sent}) == 6


def test_an_event_problem_never_raises_into_the_ledger_operation(
    lc_ledger: LocalLedger, setup: tuple[Emitter, Recorded], monkeypatch: pytest.MonkeyPatch
) -> None:
    emitter, recorded = setup
    emitter.store.create(LC_TENANT, SPEC, 1)

    def broken(tenant: str) -> list[object]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(emitter.store, "budgets", broken)
    emitter.changed(LC_TENANT)
    assert recorded.sent == []


EXHAUSTED_SPEC = WebhookSpec("http://127.0.0.1:1/hook", ("budget.exhausted",), (), None)


def test_exhausted_fires_when_remaining_reaches_exactly_zero_once(
    lc_ledger: LocalLedger, setup: tuple[Emitter, Recorded]
) -> None:
    emitter, recorded = setup
    sub = emitter.store.create(LC_TENANT, EXHAUSTED_SPEC, 1)
    steps = [
        (900, 0, 0),  # 100 left
        (900, 100, 0),  # a hold takes the rest: exhausted (the reference counts holds)
        (1_000, 0, 0),  # still 0: no new event
        (500, 0, 0),  # a new period: above 0 again
        (1_000, 0, 0),  # exhausted again
        (0, 0, 0),
        (1_000, 0, 50),  # past 0 into debt: not "exactly 0" (reference: no event)
        (1_000, 0, 0),  # back to 0 from below: no transition from above 0
    ]
    for spent, reserved, debt in steps:
        spend(lc_ledger, spent, reserved, debt)
        emitter.changed(LC_TENANT)
    events = [json.loads(d.body) for d in recorded.sent]
    assert [e["event_type"] for e in events] == ["budget.exhausted"] * 2
    assert {d.event_type for d in recorded.sent} == {"budget.exhausted"}
    assert recorded.sent[0].url == sub.url
    assert events[0]["data"] == {
        "scope": f"tenant:{LC_TENANT}", "unit": LC_UNIT, "threshold": 1.0, "utilization": 1.0,
        "allocated": ALLOCATED, "remaining": 0, "spent": 900, "reserved": 100,
        "direction": "rising",
    }  # fmt: skip


def test_exhausted_needs_its_own_subscription(
    lc_ledger: LocalLedger, setup: tuple[Emitter, Recorded]
) -> None:
    emitter, recorded = setup
    emitter.store.create(LC_TENANT, SPEC, 1)  # threshold_crossed only
    spend(lc_ledger, ALLOCATED)
    emitter.changed(LC_TENANT)
    assert {d.event_type for d in recorded.sent} == {"budget.threshold_crossed"}
