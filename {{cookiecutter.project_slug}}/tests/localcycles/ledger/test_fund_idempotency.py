"""fundBudget idempotency over HTTP, as the reference admin server keeps it (its
BudgetRepository fund script): one key space for all fundings, the whole body hashed,
24 hours of replay, replay checked before the budget's state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from localcycles import LocalLedger
from localcycles.ledger.fund_idempotency import FUND_REPLAY_WINDOW_MS
from support.localcycles_kit import LC_ADMIN_KEY, LC_UNIT, FakeClock

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
FUND = "/v1/admin/budgets/fund"


@pytest.fixture
def two_tenants(lc_ledger: LocalLedger) -> LocalLedger:
    for tenant in ("acme", "beta"):
        lc_ledger.create_tenant(tenant)
        lc_ledger.set_budget(f"tenant:{tenant}", allocated=1_000)
    lc_ledger.set_budget("tenant:acme/workspace:prod", allocated=1_000)
    return lc_ledger


def fund(http: httpx.Client, scope: str, amount: int = 100, **extra: Any) -> httpx.Response:
    tenant = scope.split("/")[0].split(":")[1]
    body = {"operation": "CREDIT", "amount": {"unit": LC_UNIT, "amount": amount}, **extra}
    where = {"tenant_id": tenant, "scope": scope, "unit": LC_UNIT}
    return http.post(FUND, params=where, json=body, headers=ADMIN)


def allocated(ledger: LocalLedger, scope: str) -> int:
    return int((ledger.budget(scope) or {})["allocated"])


@pytest.mark.parametrize("other", ["tenant:beta", "tenant:acme/workspace:prod"])
def test_one_key_space_for_every_funding_across_tenants_and_scopes(
    two_tenants: LocalLedger, lc_http: httpx.Client, other: str
) -> None:
    first = fund(lc_http, "tenant:acme", idempotency_key="k-1")
    assert first.status_code == 200 and first.json()["new_allocated"]["amount"] == 1_100
    # Same key, same body, another budget: the first answer again, nothing funded.
    again = fund(lc_http, other, idempotency_key="k-1")
    assert again.status_code == 200
    assert again.json()["new_allocated"] == first.json()["new_allocated"]
    assert allocated(two_tenants, other) == 1_000
    # Same key, another body, another budget: refused.
    other_body = fund(lc_http, other, amount=7, idempotency_key="k-1")
    assert other_body.status_code == 409
    assert other_body.json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert allocated(two_tenants, other) == 1_000
    assert allocated(two_tenants, "tenant:acme") == 1_100


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "another reason"},
        {"metadata": {"ticket": "OPS-2"}},
        {"operation": "DEBIT"},
        {"amount": {"unit": LC_UNIT, "amount": 101}},
    ],
)
def test_every_body_field_counts_in_the_hash(
    two_tenants: LocalLedger, lc_http: httpx.Client, change: dict[str, Any]
) -> None:
    body = {
        "operation": "CREDIT",
        "amount": {"unit": LC_UNIT, "amount": 100},
        "reason": "top-up",
        "metadata": {"ticket": "OPS-1"},
        "idempotency_key": "k-2",
    }
    where = {"tenant_id": "acme", "scope": "tenant:acme", "unit": LC_UNIT}
    assert lc_http.post(FUND, params=where, json=body, headers=ADMIN).status_code == 200
    same = lc_http.post(FUND, params=where, json=dict(reversed(body.items())), headers=ADMIN)
    assert same.status_code == 200 and allocated(two_tenants, "tenant:acme") == 1_100
    changed = lc_http.post(FUND, params=where, json={**body, **change}, headers=ADMIN)
    assert changed.status_code == 409 and changed.json()["error"] == "IDEMPOTENCY_MISMATCH"
    assert allocated(two_tenants, "tenant:acme") == 1_100


def test_a_funding_replays_for_24_hours_then_its_key_is_new(
    two_tenants: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock
) -> None:
    first = fund(lc_http, "tenant:acme", idempotency_key="k-3")
    lc_clock.advance(FUND_REPLAY_WINDOW_MS - 1)
    replayed = fund(lc_http, "tenant:acme", idempotency_key="k-3")
    assert replayed.json()["new_allocated"] == first.json()["new_allocated"]
    assert replayed.json()["timestamp"] != first.json()["timestamp"]  # stamped when replayed
    assert allocated(two_tenants, "tenant:acme") == 1_100
    lc_clock.advance(1)
    # Expired: applied again, and another body is no longer a mismatch either.
    assert fund(lc_http, "tenant:acme", idempotency_key="k-3").status_code == 200
    assert allocated(two_tenants, "tenant:acme") == 1_200
    lc_clock.advance(FUND_REPLAY_WINDOW_MS)
    assert fund(lc_http, "tenant:acme", amount=5, idempotency_key="k-3").status_code == 200
    assert allocated(two_tenants, "tenant:acme") == 1_205


def test_a_replay_answers_before_the_budget_state_is_checked(
    two_tenants: LocalLedger, lc_http: httpx.Client
) -> None:
    first = fund(lc_http, "tenant:acme", idempotency_key="k-4")
    two_tenants.set_budget_status("tenant:acme", "FROZEN")
    replayed = fund(lc_http, "tenant:acme", idempotency_key="k-4")
    assert (
        replayed.status_code == 200
        and replayed.json()["new_allocated"] == (first.json()["new_allocated"])
    )
    fresh = fund(lc_http, "tenant:acme", idempotency_key="k-5")
    assert fresh.status_code == 409 and fresh.json()["error"] == "BUDGET_FROZEN"
