"""Budget administration: create, update, fund and read budgets (the admin API's operations).

Specs arrive validated (``admin_requests``); each operation is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..protocol import wire
from ..protocol.admin_requests import BudgetSpec, BudgetUpdate, Funding, budget_spec, funding, scope
from ..protocol.errors import LedgerError, conflict, forbidden
from . import balances, fund_idempotency
from .accounting import Budget, checked, reconcile_over_limit
from .accounting import fund as apply_funding
from .db import Database
from .rows import (
    expire_holds,
    expire_now,
    insert_budget,
    load_budget,
    require_tenant,
    save_budgets,
)

Json = dict[str, Any]
Clock = Callable[[], int]
BUDGET_STATUSES = ("ACTIVE", "FROZEN", "CLOSED")
# GET /v1/admin/budgets sorts by these (the reference's list); utilization, descending, when
# not told, with the ledger id breaking ties so that a cursor (a ledger id) resumes exactly.
BUDGET_SORT_FIELDS = (
    "tenant_id",
    "scope",
    "unit",
    "status",
    "commit_overage_policy",
    "utilization",
    "debt",
)


class BudgetAdmin:
    """Budget administration (a part of ``LocalLedger``)."""

    db: Database
    clock: Clock

    def set_budget(
        self,
        scope: str,
        unit: str = "USD_MICROCENTS",
        allocated: int = 0,
        overdraft_limit: int = 0,
        caps: Json | None = None,
        commit_overage_policy: str | None = None,
    ) -> Json:
        """Create or update the budget at ``scope``: allocated is set (like RESET), spend,
        holds and debt are kept. Returns the BudgetLedger."""
        spec = budget_spec(scope, unit, allocated, overdraft_limit, caps, commit_overage_policy)
        now = self.clock()
        with self.db.write() as conn:
            require_tenant(conn, spec.tenant_id)
            budget = load_budget(conn, spec.scope, spec.unit)
            if budget is None:
                budget = _insert(conn, spec, now)
            else:
                budget.allocated = spec.allocated
                budget.overdraft_limit = spec.overdraft_limit
                reconcile_over_limit(budget)
                budget.caps = spec.caps
                budget.commit_overage_policy = spec.commit_overage_policy
                checked(budget.remaining, "remaining")
                save_budgets(conn, [budget], now)
        return balances.budget_ledger(budget)

    def create_budget(self, spec: BudgetSpec) -> Json:
        """Admin createBudget: 409 DUPLICATE_RESOURCE when the (scope, unit) ledger exists."""
        now = self.clock()
        with self.db.write() as conn:
            require_tenant(conn, spec.tenant_id)
            if load_budget(conn, spec.scope, spec.unit) is not None:
                raise conflict("DUPLICATE_RESOURCE", f"Budget exists: {spec.scope} {spec.unit}")
            budget = _insert(conn, spec, now)
        return balances.budget_ledger(budget)

    def update_budget(self, change: BudgetUpdate) -> Json:
        """Admin updateBudget (overdraft limit, policy; caps as a local extension)."""
        now = self.clock()
        with self.db.write() as conn:
            budget = _existing(conn, change.scope, change.unit, None)
            if change.overdraft_limit is not None:
                budget.overdraft_limit = change.overdraft_limit
                reconcile_over_limit(budget)
            if change.caps is not None or change.clear_caps:
                budget.caps = change.caps
            if change.commit_overage_policy is not None:
                budget.commit_overage_policy = change.commit_overage_policy
            save_budgets(conn, [budget], now)
        return balances.budget_ledger(budget)

    def set_budget_status(self, scope_text: str, status: str, unit: str = "USD_MICROCENTS") -> None:
        """ACTIVE, FROZEN or CLOSED (what the reference's freeze, unfreeze and tenant-close
        set); a budget that is not ACTIVE refuses reservations and funding."""
        if status not in BUDGET_STATUSES:
            raise ValueError(f"budget status must be one of {', '.join(BUDGET_STATUSES)}")
        canonical, _ = scope(scope_text)
        with self.db.write() as conn:
            _existing(conn, canonical, unit, None)
            conn.execute(
                "UPDATE budgets SET status = ? WHERE scope = ? AND unit = ?",
                (status, canonical, unit),
            )

    def fund(
        self,
        scope: str,
        unit: str,
        operation: str,
        amount: int,
        *,
        spent: int | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Fund the budget at ``scope`` as the operator (see ``apply_funding``)."""
        query = {"scope": scope, "unit": unit}
        body: Json = {"operation": operation, "amount": {"unit": unit, "amount": amount}}
        if spent is not None:
            body["spent"] = {"unit": unit, "amount": spent}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self.apply_funding(funding(query, body))

    def apply_funding(self, request: Funding, *, key_tenant: str | None = None) -> Json:
        """Admin fundBudget: CREDIT, DEBIT, RESET, RESET_SPENT or REPAY_DEBT.

        ``key_tenant``: the tenant of the calling API key (None: the admin key). Returns the
        reference BudgetFundingResponse (previous/new allocated, remaining, debt, spent).
        """
        digest = fund_idempotency.body_hash(request)
        key = request.idempotency_key
        now = self.clock()
        unit = request.unit
        with self.db.write() as conn:
            expire_holds(conn, now)
            if key:
                replayed = fund_idempotency.replayed(conn, key, digest, now)
                if replayed is not None:
                    return replayed
            budget = _existing(conn, request.scope, unit, key_tenant)
            if budget.status in ("FROZEN", "CLOSED"):
                # The reference's fund script refuses these before any operation.
                raise conflict(
                    f"BUDGET_{budget.status}", f"Budget is {budget.status.lower()}: {budget.scope}"
                )
            before = replace(budget)
            apply_funding(budget, request.operation, request.amount, request.spent)
            save_budgets(conn, [budget], now)
            out: Json = {
                "operation": request.operation,
                "previous_allocated": wire.amount(unit, before.allocated),
                "new_allocated": wire.amount(unit, budget.allocated),
                "previous_remaining": wire.amount(unit, before.remaining),
                "new_remaining": wire.amount(unit, budget.remaining),
                "previous_debt": wire.amount(unit, before.debt),
                "new_debt": wire.amount(unit, budget.debt),
                "previous_spent": wire.amount(unit, before.spent),
                "new_spent": wire.amount(unit, budget.spent),
                "timestamp": wire.iso(now),
            }
            if key:
                fund_idempotency.record(conn, key, digest, out, now)
        return out

    def budget(self, scope_text: str, unit: str = "USD_MICROCENTS") -> Json | None:
        """Flat figures of one budget (after lazy expiry), or None."""
        canonical, _ = scope(scope_text)
        expire_now(self.db, self.clock())
        with self.db.read() as conn:
            found = load_budget(conn, canonical, unit)
        return balances.flat_balance(found) if found else None

    def list_budgets(
        self, tenant_id: str, scope_prefix: str | None = None, unit: str | None = None
    ) -> list[Json]:
        expire_now(self.db, self.clock())
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM budgets WHERE tenant_id = ? ORDER BY scope, unit", (tenant_id,)
            ).fetchall()
        return [
            balances.budget_ledger(b)
            for b in map(Budget.from_row, rows)
            if (not scope_prefix or b.scope.startswith(scope_prefix.lower()))
            and (not unit or b.unit == unit)
        ]


def budget_page(
    rows: list[Json], sort_by: str, descending: bool, cursor: str | None, limit: int
) -> tuple[list[Json], bool]:
    """One page of BudgetLedgers, as the reference pages them: sorted by ``sort_by`` (then
    ledger id), starting after the row whose ledger id is ``cursor``; and whether more
    follow. A cursor not in the rows is 400 (the reference's answer: start again)."""
    ordered = sorted(rows, key=lambda row: (_sort_value(row, sort_by), row["ledger_id"]))
    if descending:
        ordered.reverse()
    start = 0
    if cursor:
        ids = [row["ledger_id"] for row in ordered]
        if cursor not in ids:
            raise LedgerError(
                400,
                "INVALID_REQUEST",
                "Cursor is not valid for this result set; restart pagination without a cursor",
            )
        start = ids.index(cursor) + 1
    return ordered[start : start + limit], len(ordered) > start + limit


def _sort_value(row: Json, field: str) -> tuple[bool, Any]:
    """A row's sort value, absent ones last (in ascending order)."""
    if field == "utilization":
        allocated = row["allocated"]["amount"]
        return False, row["spent"]["amount"] / allocated if allocated else 0.0
    if field == "debt":
        return False, row["debt"]["amount"]
    value = row.get(field)
    return value is None, value if value is not None else ""


def _insert(conn: sqlite3.Connection, spec: BudgetSpec, now: int) -> Budget:
    return insert_budget(
        conn,
        spec.tenant_id,
        spec.scope,
        spec.unit,
        spec.allocated,
        spec.overdraft_limit,
        spec.caps,
        spec.commit_overage_policy,
        now,
    )


def _existing(conn: sqlite3.Connection, scope: str, unit: str, key_tenant: str | None) -> Budget:
    budget = load_budget(conn, scope, unit)
    if budget is None:
        raise LedgerError(404, "BUDGET_NOT_FOUND", f"Budget not found: {scope} {unit}")
    if key_tenant is not None and budget.tenant_id != key_tenant:
        raise forbidden("Budget does not belong to that tenant")
    return budget
