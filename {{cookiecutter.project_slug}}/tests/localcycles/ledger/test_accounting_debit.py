"""A DEBIT funding never takes a budget below zero.

The reference admin server's fund script (cycles-server-admin ``BudgetRepository``) refuses
a DEBIT larger than what remains (``remaining < amount``: allocated less spent, held and
debt) with 409 ``BUDGET_EXCEEDED`` "Insufficient funds: <scope>" and changes nothing; a
DEBIT of exactly what remains leaves zero. Over real HTTP with the admin key, on a budget
that has both spend and an open hold, so "remaining" is not just "allocated".
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from runcycles import CyclesClient

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_UNIT, ledger_state, reservation_body

SCOPE = "tenant:acme"
FUND = f"/v1/admin/budgets/fund?scope={SCOPE}&unit={LC_UNIT}"
ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
ALLOCATED, SPENT, HELD = 1_000, 200, 300
REMAINING = ALLOCATED - SPENT - HELD


@pytest.fixture
def in_use(lc_ledger: LocalLedger, lc_client: CyclesClient) -> LocalLedger:
    """acme's budget with SPENT committed and HELD still reserved."""
    lc_ledger.set_budget(SCOPE, allocated=ALLOCATED)
    spent = lc_client.create_reservation(reservation_body(SPENT))
    committed = lc_client.commit_reservation(
        spent.body["reservation_id"],
        {"idempotency_key": "spend", "actual": {"unit": LC_UNIT, "amount": SPENT}},
    )
    assert committed.status == 200, committed.body
    assert lc_client.create_reservation(reservation_body(HELD)).status == 200
    assert (lc_ledger.budget(SCOPE) or {})["remaining"] == REMAINING
    return lc_ledger


def debit(lc_http: httpx.Client, amount: int) -> httpx.Response:
    body: dict[str, Any] = {"operation": "DEBIT", "amount": {"unit": LC_UNIT, "amount": amount}}
    return lc_http.post(FUND, json=body, headers=ADMIN)


def test_a_debit_above_what_remains_is_refused_and_changes_nothing(
    in_use: LocalLedger, lc_http: httpx.Client
) -> None:
    before = ledger_state(in_use)
    refused = debit(lc_http, REMAINING + 1)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "BUDGET_EXCEEDED"
    assert refused.json()["message"] == f"Insufficient funds: {SCOPE}"
    assert ledger_state(in_use) == before


def test_a_debit_of_exactly_what_remains_leaves_zero(
    in_use: LocalLedger, lc_http: httpx.Client
) -> None:
    answer = debit(lc_http, REMAINING)
    assert answer.status_code == 200, answer.text
    assert answer.json()["new_remaining"]["amount"] == 0
    budget = in_use.budget(SCOPE) or {}
    assert (budget["allocated"], budget["remaining"]) == (ALLOCATED - REMAINING, 0)
    assert (budget["spent"], budget["reserved"]) == (SPENT, HELD)
    assert debit(lc_http, 1).status_code == 409  # nothing left to take
