"""Budget arithmetic: pure functions over in-memory budget rows, no I/O.

``remaining`` is never stored: it is always ``allocated - spent - reserved - debt``, so the
ledger invariant the spec requires on every Balance holds by construction.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import MAX_INT64, conflict, invalid


@dataclass
class Budget:
    """One (scope, unit) ledger row."""

    scope: str
    unit: str
    tenant_id: str
    ledger_id: str
    allocated: int
    spent: int
    reserved: int
    debt: int
    overdraft_limit: int
    is_over_limit: bool
    commit_overage_policy: str | None
    caps: dict[str, Any] | None
    status: str
    created_at_ms: int
    updated_at_ms: int

    @property
    def remaining(self) -> int:
        return self.allocated - self.spent - self.reserved - self.debt

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Budget:
        return cls(
            scope=row["scope"],
            unit=row["unit"],
            tenant_id=row["tenant_id"],
            ledger_id=row["ledger_id"],
            allocated=row["allocated"],
            spent=row["spent"],
            reserved=row["reserved"],
            debt=row["debt"],
            overdraft_limit=row["overdraft_limit"],
            is_over_limit=bool(row["is_over_limit"]),
            commit_overage_policy=row["commit_overage_policy"],
            caps=json.loads(row["caps"]) if row["caps"] else None,
            status=row["status"],
            created_at_ms=row["created_at_ms"],
            updated_at_ms=row["updated_at_ms"],
        )


def checked(value: int, what: str) -> int:
    """Refuse results that would not fit the protocol's int64 amounts."""
    if not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise invalid(f"{what} would overflow int64")
    return value


def reserve_denial(budgets: list[Budget], estimate: int) -> tuple[str, str] | None:
    """First reason (code, scope) a new hold of ``estimate`` is refused, in reference order.

    Over-limit beats outstanding debt; debt blocks only where no overdraft is allowed.
    """
    for budget in budgets:
        if budget.status == "FROZEN":
            return "BUDGET_FROZEN", budget.scope
        if budget.status == "CLOSED":
            return "BUDGET_CLOSED", budget.scope
        if budget.is_over_limit:
            return "OVERDRAFT_LIMIT_EXCEEDED", budget.scope
        if budget.debt > 0 and budget.overdraft_limit == 0:
            return "DEBT_OUTSTANDING", budget.scope
        if budget.remaining < estimate:
            return "BUDGET_EXCEEDED", budget.scope
    return None


DENIAL_MESSAGES = {
    "BUDGET_FROZEN": "Budget is frozen for scope {scope}",
    "BUDGET_CLOSED": "Budget is closed for scope {scope}",
    "OVERDRAFT_LIMIT_EXCEEDED": "Scope {scope} is over its overdraft limit; no new reservations",
    "DEBT_OUTSTANDING": "Scope {scope} has outstanding debt",
    "BUDGET_EXCEEDED": "Insufficient remaining budget for scope {scope}",
}


def charge_overage(budgets: list[Budget], amount: int, policy: str) -> int:
    """Charge ``amount`` beyond what is already held, per overage policy; returns the charge.

    Used for a commit's ``actual - estimate`` and for a whole event. Mutates ``budgets``.
      * ALLOW_IF_AVAILABLE: charge what every scope can cover (min remaining, floor 0);
        scopes that could not cover the full amount go over-limit. Never debt, never refuses.
      * ALLOW_WITH_OVERDRAFT: scopes with an overdraft limit take the shortfall as debt, up
        to that limit (else 409 OVERDRAFT_LIMIT_EXCEEDED); scopes without one cap the charge
        as above.
      * REJECT is decided by the caller (commits refuse any overage, events any shortfall).
    """
    if amount <= 0:
        return 0
    if policy == "ALLOW_WITH_OVERDRAFT":
        charge = amount
        for budget in budgets:
            if budget.overdraft_limit == 0 and budget.remaining < charge:
                charge = min(charge, max(budget.remaining, 0))
        for budget in budgets:
            if budget.overdraft_limit > 0 and budget.remaining < charge:
                deficit = charge - max(budget.remaining, 0)
                if budget.debt + deficit > budget.overdraft_limit:
                    raise conflict(
                        "OVERDRAFT_LIMIT_EXCEEDED",
                        f"Overdraft limit exceeded for scope {budget.scope}",
                        {
                            "scope": budget.scope,
                            "current_debt": budget.debt,
                            "deficit": deficit,
                            "overdraft_limit": budget.overdraft_limit,
                        },
                    )
        for budget in budgets:
            if charge < amount and budget.overdraft_limit == 0 and budget.remaining < amount:
                budget.is_over_limit = True
            if budget.remaining >= charge:
                budget.spent += charge
            else:
                funded = max(budget.remaining, 0)
                budget.spent += funded
                budget.debt += charge - funded
                if budget.overdraft_limit > 0 and budget.debt > budget.overdraft_limit:
                    budget.is_over_limit = True
        return charge
    # ALLOW_IF_AVAILABLE
    charge = min([amount, *(max(budget.remaining, 0) for budget in budgets)])
    for budget in budgets:
        if charge < amount and budget.remaining < amount:
            budget.is_over_limit = True
        budget.spent += charge
    return charge


def fund(budget: Budget, operation: str, amount: int, spent: int | None) -> None:
    """Apply an operator funding operation (reference admin semantics). Mutates ``budget``."""
    if operation == "CREDIT":
        budget.allocated = checked(budget.allocated + amount, "allocated")
    elif operation == "DEBIT":
        if budget.remaining < amount:
            raise conflict("BUDGET_EXCEEDED", f"Insufficient funds: {budget.scope}")
        budget.allocated -= amount
    elif operation == "RESET":
        budget.allocated = amount
    elif operation == "RESET_SPENT":
        budget.allocated = amount
        budget.spent = spent or 0
    elif operation == "REPAY_DEBT":
        repayment = min(budget.debt, amount)
        budget.debt -= repayment
        budget.allocated = checked(budget.allocated + amount - repayment, "allocated")
    else:  # pragma: no cover - validated by callers
        raise invalid(f"unknown funding operation {operation}")
    checked(budget.remaining, "remaining")
    reconcile_over_limit(budget)


def reconcile_over_limit(budget: Budget) -> None:
    """Operator changes recompute the over-limit flag from debt, as the reference's funding
    and budget-update scripts do: over limit exactly when debt exceeds the overdraft limit.

    So debt left on a budget whose limit is set to 0 blocks new holds with
    OVERDRAFT_LIMIT_EXCEEDED, and a funding that clears the debt clears the flag.
    """
    budget.is_over_limit = budget.debt > budget.overdraft_limit
