"""A FROZEN or CLOSED budget refuses every funding operation (the reference admin server's
fund script: 409 BUDGET_FROZEN / BUDGET_CLOSED before the operation), and changes nothing."""

from __future__ import annotations

import httpx
import pytest

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_UNIT

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
OPERATIONS = ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT")


@pytest.mark.parametrize("status", ["FROZEN", "CLOSED"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_budget_not_active_refuses_funding(
    lc_ledger: LocalLedger, lc_http: httpx.Client, status: str, operation: str
) -> None:
    lc_ledger.create_tenant("acme")
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    lc_ledger.set_budget_status("tenant:acme", status)
    before = lc_ledger.budget("tenant:acme")
    refused = lc_http.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": "acme", "scope": "tenant:acme", "unit": LC_UNIT},
        json={"operation": operation, "amount": {"unit": LC_UNIT, "amount": 10}},
        headers=ADMIN,
    )
    assert refused.status_code == 409
    assert refused.json()["error"] == f"BUDGET_{status}"
    assert refused.json()["message"] == f"Budget is {status.lower()}: tenant:acme"
    assert lc_ledger.budget("tenant:acme") == before


def test_an_unfrozen_budget_is_funded_again(lc_ledger: LocalLedger) -> None:
    lc_ledger.create_tenant("acme")
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    lc_ledger.set_budget_status("tenant:acme", "FROZEN")
    lc_ledger.set_budget_status("tenant:acme", "ACTIVE")
    assert lc_ledger.fund("tenant:acme", LC_UNIT, "CREDIT", 5)["new_allocated"]["amount"] == 1_005


def test_set_budget_status_names_the_allowed_statuses(lc_ledger: LocalLedger) -> None:
    lc_ledger.create_tenant("acme")
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    with pytest.raises(ValueError, match="ACTIVE, FROZEN, CLOSED"):
        lc_ledger.set_budget_status("tenant:acme", "PAUSED")
