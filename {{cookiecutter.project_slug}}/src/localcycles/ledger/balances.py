"""A budget row as the wire shows it: the protocol's Balance and the admin API's
BudgetLedger. Optional fields are omitted, never null (runcycles' models reject null)."""

from __future__ import annotations

from typing import Any

from ..protocol import wire
from ..protocol.scopes import leaf
from .accounting import Budget

Json = dict[str, Any]


def balance(budget: Budget) -> Json:
    """Protocol Balance; ``debt`` is always present so the ledger invariant is checkable."""
    out: Json = {
        "scope": leaf(budget.scope),
        "scope_path": budget.scope,
        "remaining": wire.amount(budget.unit, budget.remaining),
        "reserved": wire.amount(budget.unit, budget.reserved),
        "spent": wire.amount(budget.unit, budget.spent),
        "allocated": wire.amount(budget.unit, budget.allocated),
        "debt": wire.amount(budget.unit, budget.debt),
        "is_over_limit": budget.is_over_limit,
    }
    if budget.overdraft_limit > 0:
        out["overdraft_limit"] = wire.amount(budget.unit, budget.overdraft_limit)
    return out


def flat_balance(budget: Budget) -> Json:
    """Plain integers, for CLIs and tests."""
    return {
        "scope": budget.scope,
        "unit": budget.unit,
        "allocated": budget.allocated,
        "spent": budget.spent,
        "reserved": budget.reserved,
        "debt": budget.debt,
        "remaining": budget.remaining,
        "overdraft_limit": budget.overdraft_limit,
        "is_over_limit": budget.is_over_limit,
        "status": budget.status,
    }


def budget_ledger(budget: Budget) -> Json:
    """The reference admin API's BudgetLedger (plus ``caps``, a local extension)."""
    out: Json = {
        "ledger_id": budget.ledger_id,
        "tenant_id": budget.tenant_id,
        "scope": budget.scope,
        "scope_path": budget.scope,
        "unit": budget.unit,
        "allocated": wire.amount(budget.unit, budget.allocated),
        "remaining": wire.amount(budget.unit, budget.remaining),
        "reserved": wire.amount(budget.unit, budget.reserved),
        "spent": wire.amount(budget.unit, budget.spent),
        "debt": wire.amount(budget.unit, budget.debt),
        "overdraft_limit": wire.amount(budget.unit, budget.overdraft_limit),
        "is_over_limit": budget.is_over_limit,
        "status": budget.status,
        "created_at": wire.iso(budget.created_at_ms),
        "updated_at": wire.iso(budget.updated_at_ms),
    }
    if budget.commit_overage_policy:
        out["commit_overage_policy"] = budget.commit_overage_policy
    if budget.caps:
        out["caps"] = budget.caps
    return out
