"""A budget row on the wire: the protocol's Balance, the admin BudgetLedger, the flat form."""

from __future__ import annotations

from dataclasses import replace

from localcycles.ledger.accounting import Budget
from localcycles.ledger.balances import balance, budget_ledger, flat_balance

U = "USD_MICROCENTS"
ROW = Budget(
    scope="tenant:acme/app:chat",
    unit=U,
    tenant_id="acme",
    ledger_id="led_1",
    allocated=1_000,
    spent=300,
    reserved=200,
    debt=100,
    overdraft_limit=0,
    is_over_limit=False,
    commit_overage_policy=None,
    caps=None,
    status="ACTIVE",
    created_at_ms=0,
    updated_at_ms=1_000,
)


def test_a_balance_derives_remaining_and_omits_a_zero_overdraft_limit() -> None:
    assert balance(ROW) == {
        "scope": "app:chat",
        "scope_path": "tenant:acme/app:chat",
        "remaining": {"unit": U, "amount": 400},
        "reserved": {"unit": U, "amount": 200},
        "spent": {"unit": U, "amount": 300},
        "allocated": {"unit": U, "amount": 1_000},
        "debt": {"unit": U, "amount": 100},
        "is_over_limit": False,
    }
    limited = balance(replace(ROW, overdraft_limit=50))
    assert limited["overdraft_limit"] == {"unit": U, "amount": 50}


def test_a_budget_ledger_carries_policy_and_caps_only_when_set() -> None:
    plain = budget_ledger(ROW)
    assert plain["ledger_id"] == "led_1" and plain["remaining"] == {"unit": U, "amount": 400}
    assert plain["overdraft_limit"] == {"unit": U, "amount": 0}
    assert plain["created_at"] == "1970-01-01T00:00:00Z"
    assert plain["updated_at"] == "1970-01-01T00:00:01Z"
    assert "commit_overage_policy" not in plain and "caps" not in plain
    full = budget_ledger(replace(ROW, commit_overage_policy="REJECT", caps={"max_tokens": 5}))
    assert full["commit_overage_policy"] == "REJECT" and full["caps"] == {"max_tokens": 5}


def test_the_flat_form_is_plain_integers() -> None:
    flat = flat_balance(ROW)
    assert flat["remaining"] == 400 and flat["debt"] == 100 and flat["status"] == "ACTIVE"
    assert flat["scope"] == "tenant:acme/app:chat" and flat["unit"] == U
