"""Budget plans applied to Cycles: which budgets follow a plan, and provisioning them.

A plan (``config_plans.py``) gives a tenant's budget its allocation, and its period the
time the spend resets (``rollover.py``). Where the budget lives is the tenancy's answer
(``cycles/tenancy.py``); every change goes through the Cycles admin API
(``cycles/admin_api.py``), so the embedded ledger and a real admin server are changed alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import click

from ..config import Plan, Settings
from ..cycles import admin_api, tenancy
from ..cycles.admin_api import Endpoint
from ..money import format_usd


@dataclass(frozen=True)
class PlannedBudget:
    """An app tenant's budget that follows a plan."""

    tenant: str
    cycles_tenant: str  # the Cycles tenant that owns the budget
    scope: str
    plan: Plan


def planned_budgets(
    settings: Settings, tenants: Iterable[str] | None = None
) -> list[PlannedBudget]:
    """The budgets of ``tenants`` (default: every tenant of the app) that have a plan."""
    found = []
    for tenant in settings.tenants if tenants is None else tenants:
        plan = settings.plan_for(tenant)
        if plan is not None:
            found.append(
                PlannedBudget(
                    tenant,
                    tenancy.cycles_tenant(settings, tenant),
                    tenancy.budget_scope(settings, tenant),
                    plan,
                )
            )
    return found


def apply_plan(admin: Endpoint, budget: PlannedBudget) -> None:
    """Make the budget's allocation the plan's: a new budget is made with it, an existing
    one is resized (RESET: its spend, holds and debt are kept)."""
    plan, tenant, scope = budget.plan, budget.cycles_tenant, budget.scope
    if admin_api.create_budget(admin, tenant, scope, plan.allocated, report=False):
        change = "created"
    else:
        result = admin_api.set_allocation(admin, tenant, scope, plan.allocated)
        before = admin_api.ledger_amount(result, "previous_allocated")
        change = "unchanged" if before == plan.allocated else f"was {format_usd(before)}"
    click.echo(f"budget {budget.scope}: plan {describe(plan)} ({change})")


def describe(plan: Plan) -> str:
    """``pro, $50.00 per month`` (or ``..., never reset``)."""
    cadence = "never reset" if plan.period == "none" else f"per {plan.period}"
    return f"{plan.name}, {format_usd(plan.allocated)} {cadence}"
