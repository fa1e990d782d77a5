"""JSON shapes on the wire. Optional fields are omitted, never null: runcycles' models
forbid unknown fields and reject null."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .accounting import Budget
from .scopes import leaf

Json = dict[str, Any]


def amount(unit: str, value: int) -> Json:
    return {"unit": unit, "amount": value}


def balance(budget: Budget) -> Json:
    """Protocol Balance; ``debt`` is always present so the ledger invariant is checkable."""
    out: Json = {
        "scope": leaf(budget.scope),
        "scope_path": budget.scope,
        "remaining": amount(budget.unit, budget.remaining),
        "reserved": amount(budget.unit, budget.reserved),
        "spent": amount(budget.unit, budget.spent),
        "allocated": amount(budget.unit, budget.allocated),
        "debt": amount(budget.unit, budget.debt),
        "is_over_limit": budget.is_over_limit,
    }
    if budget.overdraft_limit > 0:
        out["overdraft_limit"] = amount(budget.unit, budget.overdraft_limit)
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


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    """ISO 8601 date-time -> epoch ms; naive values are taken as UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def ledger(budget: Budget) -> Json:
    """The reference admin API's BudgetLedger (plus ``caps``, a local extension)."""
    out: Json = {
        "ledger_id": budget.ledger_id,
        "tenant_id": budget.tenant_id,
        "scope": budget.scope,
        "scope_path": budget.scope,
        "unit": budget.unit,
        "allocated": amount(budget.unit, budget.allocated),
        "remaining": amount(budget.unit, budget.remaining),
        "reserved": amount(budget.unit, budget.reserved),
        "spent": amount(budget.unit, budget.spent),
        "debt": amount(budget.unit, budget.debt),
        "overdraft_limit": amount(budget.unit, budget.overdraft_limit),
        "is_over_limit": budget.is_over_limit,
        "status": budget.status,
        "created_at": iso(budget.created_at_ms),
        "updated_at": iso(budget.updated_at_ms),
    }
    if budget.commit_overage_policy:
        out["commit_overage_policy"] = budget.commit_overage_policy
    if budget.caps:
        out["caps"] = budget.caps
    return out
