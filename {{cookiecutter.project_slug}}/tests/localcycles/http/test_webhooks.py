"""The admin API's webhooks over HTTP, and threshold events delivered to a subscriber."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from localcycles import LocalLedger
from localcycles.events.delivery import sign
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, LC_UNIT
from support.webhook_receiver import webhook_receiver

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
ALLOCATED = 100_000


def spend(http: httpx.Client, key: str, amount: int) -> None:
    body = {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": LC_TENANT},
        "action": {"kind": "llm.completion", "name": "m"},
        "actual": {"unit": LC_UNIT, "amount": amount},
    }
    answer = http.post("/v1/events", json=body, headers={"X-Cycles-API-Key": key})
    assert answer.status_code == 201, answer.text


def fund(http: httpx.Client, operation: str, amount: int) -> None:
    answer = http.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": LC_TENANT, "scope": f"tenant:{LC_TENANT}", "unit": LC_UNIT},
        json={"operation": operation, "amount": {"amount": amount, "unit": LC_UNIT},
              "idempotency_key": uuid.uuid4().hex},
        headers=ADMIN,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text


def subscribe(http: httpx.Client, url: str, **extra: Any) -> httpx.Response:
    body = {"url": url, "event_types": ["budget.threshold_crossed"], **extra}
    params = {"tenant_id": LC_TENANT}
    return http.post("/v1/admin/webhooks", params=params, json=body, headers=ADMIN)


def test_subscriptions_are_created_listed_and_deleted_with_the_admin_key(
    lc_http: httpx.Client,
) -> None:
    created = subscribe(lc_http, "http://127.0.0.1:9/hook", signing_secret="s3cret")
    assert created.status_code == 201
    sub = created.json()["subscription"]
    assert created.json()["signing_secret"] == "s3cret"
    assert sub["tenant_id"] == LC_TENANT and sub["status"] == "ACTIVE"
    listed = lc_http.get("/v1/admin/webhooks", params={"tenant_id": LC_TENANT}, headers=ADMIN)
    assert [s["subscription_id"] for s in listed.json()["subscriptions"]] == [
        sub["subscription_id"]
    ]
    assert "signing_secret" not in listed.text
    path = f"/v1/admin/webhooks/{sub['subscription_id']}"
    assert lc_http.get(path).status_code == 401
    deleted = lc_http.delete(path, headers=ADMIN)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert lc_http.delete(path, headers=ADMIN).status_code == 404
    assert subscribe(lc_http, "http://x/h", colour="red").status_code == 400


def test_spend_past_each_threshold_delivers_one_signed_event_each_period(
    lc_http: httpx.Client, lc_api_key: str, lc_ledger: LocalLedger
) -> None:
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", LC_UNIT, allocated=ALLOCATED)
    with webhook_receiver() as receiver:
        created = subscribe(
            lc_http, receiver.url, thresholds={"budget_utilization": [0.8, 0.95, 1.0]}
        ).json()
        for amount in (50_000, 31_000, 1_000, 14_000, 20_000, 5_000):
            spend(lc_http, lc_api_key, amount)
        first = receiver.wait_for(3)
        fund(lc_http, "RESET_SPENT", ALLOCATED)  # the next period
        spend(lc_http, lc_api_key, 100_000)
        second = receiver.wait_for(6)[3:]
    for got in first + second:
        assert got.headers["x-cycles-signature"] == sign(created["signing_secret"], got.body)
    levels = [json.loads(got.body)["data"]["threshold"] for got in first + second]
    assert levels == [0.8, 0.95, 1.0, 0.8, 0.95, 1.0]
    assert len(receiver.received) == 6
    final = lc_ledger.budget(f"tenant:{LC_TENANT}", LC_UNIT)
    assert final is not None and final["spent"] == ALLOCATED and final["remaining"] == 0


def test_a_hold_that_takes_the_last_of_a_budget_delivers_budget_exhausted(
    lc_http: httpx.Client, lc_api_key: str, lc_ledger: LocalLedger
) -> None:
    """As the reference server: checked after a reservation too (remaining counts holds)."""
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", LC_UNIT, allocated=ALLOCATED)
    with webhook_receiver() as receiver:
        subscribe(lc_http, receiver.url, event_types=["budget.exhausted"])
        body = {
            "idempotency_key": uuid.uuid4().hex,
            "subject": {"tenant": LC_TENANT},
            "action": {"kind": "llm.completion", "name": "m"},
            "estimate": {"unit": LC_UNIT, "amount": ALLOCATED},
        }
        held = lc_http.post("/v1/reservations", json=body, headers={"X-Cycles-API-Key": lc_api_key})
        assert held.status_code == 200, held.text
        (got,) = receiver.wait_for(1)
    event = json.loads(got.body)
    assert event["event_type"] == got.headers["x-cycles-event-type"] == "budget.exhausted"
    assert event["data"]["threshold"] == 1.0 and event["data"]["remaining"] == 0
    assert event["data"]["reserved"] == ALLOCATED and event["data"]["spent"] == 0
