"""Ledger figures through reserve/commit for the three overage policies, debt and funding."""

from __future__ import annotations

import uuid
from typing import Any

from runcycles import CyclesClient
from runcycles.models import BalanceResponse, CommitResponse

from localcycles import LocalLedger
from support.localcycles_kit import LC_UNIT, reservation_body

WS = {"tenant": "acme", "workspace": "prod"}


def state(ledger: LocalLedger, scope: str) -> dict[str, Any]:
    row = ledger.budget(scope, LC_UNIT)
    assert row is not None
    return {
        k: row[k] for k in ("allocated", "spent", "reserved", "debt", "remaining", "is_over_limit")
    }


def reserve(client: CyclesClient, amount: int, policy: str, subject: dict[str, str]) -> str:
    res = client.create_reservation(
        reservation_body(amount, subject=subject, overage_policy=policy)
    )
    assert res.status == 200, res.body
    return str(res.body["reservation_id"])


def commit(client: CyclesClient, rid: str, amount: int) -> Any:
    return client.commit_reservation(
        rid, {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": LC_UNIT, "amount": amount}}
    )


def test_allow_if_available_caps_the_overage_and_marks_over_limit(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    lc_ledger.set_budget("tenant:acme/workspace:prod", allocated=600)
    rid = reserve(lc_client, 500, "ALLOW_IF_AVAILABLE", WS)
    assert state(lc_ledger, "tenant:acme/workspace:prod") == {
        "allocated": 600,
        "spent": 0,
        "reserved": 500,
        "debt": 0,
        "remaining": 100,
        "is_over_limit": False,
    }

    done = commit(lc_client, rid, 800)  # 300 over; the workspace can cover only 100
    assert done.status == 200
    assert CommitResponse.model_validate(done.body).charged.amount == 600
    assert state(lc_ledger, "tenant:acme") == {
        "allocated": 1_000,
        "spent": 600,
        "reserved": 0,
        "debt": 0,
        "remaining": 400,
        "is_over_limit": False,
    }
    assert state(lc_ledger, "tenant:acme/workspace:prod") == {
        "allocated": 600,
        "spent": 600,
        "reserved": 0,
        "debt": 0,
        "remaining": 0,
        "is_over_limit": True,
    }

    blocked = lc_client.create_reservation(reservation_body(1, subject=WS))
    assert blocked.status == 409 and blocked.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    # Funding reconciles the flag and unblocks the scope.
    lc_ledger.fund("tenant:acme/workspace:prod", LC_UNIT, "CREDIT", 100)
    assert state(lc_ledger, "tenant:acme/workspace:prod")["is_over_limit"] is False
    assert lc_client.create_reservation(reservation_body(1, subject=WS)).status == 200


def test_reject_refuses_any_overage_and_keeps_the_hold(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    rid = reserve(lc_client, 500, "REJECT", {"tenant": "acme"})
    refused = commit(lc_client, rid, 501)
    assert refused.status == 409 and refused.body["error"] == "BUDGET_EXCEEDED"
    assert state(lc_ledger, "tenant:acme")["reserved"] == 500
    assert commit(lc_client, rid, 500).status == 200
    assert state(lc_ledger, "tenant:acme") == {
        "allocated": 1_000,
        "spent": 500,
        "reserved": 0,
        "debt": 0,
        "remaining": 500,
        "is_over_limit": False,
    }


def test_allow_with_overdraft_accrues_debt_up_to_the_limit(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=1_000, overdraft_limit=300)
    rid = reserve(lc_client, 900, "ALLOW_WITH_OVERDRAFT", {"tenant": "acme"})
    done = commit(lc_client, rid, 1_150)  # 250 over, 100 available: 150 becomes debt
    assert done.status == 200 and done.body["charged"]["amount"] == 1_150
    assert state(lc_ledger, "tenant:acme") == {
        "allocated": 1_000,
        "spent": 1_000,
        "reserved": 0,
        "debt": 150,
        "remaining": -150,
        "is_over_limit": False,
    }
    balances = BalanceResponse.model_validate(lc_client.get_balances(tenant="acme").body).balances
    assert balances[0].remaining.amount == -150
    assert balances[0].debt is not None and balances[0].debt.amount == 150

    short = lc_client.create_reservation(reservation_body(10))
    assert short.status == 409 and short.body["error"] == "BUDGET_EXCEEDED"

    lc_ledger.fund("tenant:acme", LC_UNIT, "CREDIT", 1_000)
    rid = reserve(lc_client, 800, "ALLOW_WITH_OVERDRAFT", {"tenant": "acme"})
    over = commit(lc_client, rid, 1_100)  # would need 250 more debt: 400 > 300
    assert over.status == 409 and over.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    assert commit(lc_client, rid, 800).status == 200

    # Debt above a limit lowered to 0 puts the scope over its limit, as the reference's
    # budget update computes it (debt > overdraft_limit), whatever remains allocated.
    lc_ledger.set_budget("tenant:acme", allocated=2_000, overdraft_limit=0)
    blocked = lc_client.create_reservation(reservation_body(1))
    assert blocked.status == 409 and blocked.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    decided = lc_client.decide(reservation_body(1))
    assert decided.body == {
        "decision": "DENY",
        "affected_scopes": ["tenant:acme"],
        "reason_code": "OVERDRAFT_LIMIT_EXCEEDED",
    }
    repaid = lc_ledger.fund("tenant:acme", LC_UNIT, "REPAY_DEBT", 150)
    assert repaid["new_debt"]["amount"] == 0
    assert lc_client.create_reservation(reservation_body(1)).status == 200


def test_events_charge_per_policy(lc_ledger: LocalLedger, lc_client: CyclesClient) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=100)

    def event(amount: int, policy: str) -> Any:
        return lc_client.create_event(
            {
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": "acme"},
                "action": {"kind": "tool.call", "name": "x"},
                "actual": {"unit": LC_UNIT, "amount": amount},
                "overage_policy": policy,
            }
        )

    rejected = event(150, "REJECT")
    assert rejected.status == 409 and rejected.body["error"] == "BUDGET_EXCEEDED"
    capped = event(150, "ALLOW_IF_AVAILABLE")
    assert capped.status == 201 and capped.body["charged"]["amount"] == 100
    assert state(lc_ledger, "tenant:acme")["is_over_limit"] is True


def test_funding_operations(lc_ledger: LocalLedger) -> None:
    lc_ledger.create_tenant("acme")
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    assert lc_ledger.fund("tenant:acme", LC_UNIT, "CREDIT", 500)["new_allocated"]["amount"] == 1_500
    assert lc_ledger.fund("tenant:acme", LC_UNIT, "DEBIT", 200)["new_remaining"]["amount"] == 1_300
    assert lc_ledger.fund("tenant:acme", LC_UNIT, "RESET", 50)["new_allocated"]["amount"] == 50
    out = lc_ledger.fund("tenant:acme", LC_UNIT, "RESET_SPENT", 70)
    assert out["new_spent"]["amount"] == 0 and out["new_remaining"]["amount"] == 70
