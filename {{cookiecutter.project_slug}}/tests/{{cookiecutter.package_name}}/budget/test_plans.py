"""Plans applied through the admin API of a real embedded Cycles server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, budget_scope
from {{ cookiecutter.package_name }}.budget.plans import apply_plan, describe, planned_budgets
from {{ cookiecutter.package_name }}.config import Plan, app_settings
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from localcycles import LocalCyclesServer
from support.localcycles_kit import assert_ledger_invariants
from support.tenancy_kit import cycles_tenant_of

PLANS = {"BUDGET_PLANS": "free=1/month,pro=50.5/week", "TENANT_PLANS": "acme=pro"}


def figures(server: LocalCyclesServer, tenant: str) -> dict[str, Any] | None:
    return server.ledger.budget(budget_scope(tenant), UNIT)


def test_only_tenants_with_a_plan_have_planned_budgets(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    settings = app_settings(make_app(cycles_server.base_url, **PLANS))
    (acme,) = planned_budgets(settings)
    assert (acme.tenant, acme.cycles_tenant, acme.scope) == (
        "acme",
        cycles_tenant_of("acme"),
        budget_scope("acme"),
    )
    assert acme.plan == Plan("pro", 5_050_000_000, "week")
    assert planned_budgets(settings, ["globex"]) == []
    with_default = app_settings(make_app(cycles_server.base_url, DEFAULT_PLAN="free", **PLANS))
    assert [b.plan.name for b in planned_budgets(with_default)] == ["pro", "free"]


def test_a_plan_makes_a_new_budget_and_resizes_an_existing_one(
    cycles_server: LocalCyclesServer,
    make_app: Callable[..., Flask],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = cycles_server.ledger
    Provisioner(ledger).tenant("acme", allocated=1_000)
    ledger.fund(budget_scope("acme"), UNIT, "RESET_SPENT", 1_000, spent=400)
    ledger.create_tenant(cycles_tenant_of("globex"))  # a Cycles tenant, no budget yet
    settings = app_settings(make_app(cycles_server.base_url, DEFAULT_PLAN="free", **PLANS))
    admin = Endpoint(cycles_server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
    acme, globex = planned_budgets(settings)

    apply_plan(admin, acme)  # exists: resized, its spend kept
    assert figures(cycles_server, "acme") == {
        **figures_before(1_000, 400),
        "scope": budget_scope("acme"),
        "allocated": 5_050_000_000,
        "remaining": 5_050_000_000 - 400,
    }
    apply_plan(admin, globex)  # made with the plan's allocation
    found = figures(cycles_server, "globex")
    assert found is not None and (found["allocated"], found["spent"]) == (100_000_000, 0)
    apply_plan(admin, globex)  # again: nothing changes
    lines = capsys.readouterr().out.splitlines()
    assert f"budget {budget_scope('acme')}: plan pro, $50.50 per week (was $0.00001)" in lines
    assert lines[-1] == f"budget {budget_scope('globex')}: plan free, $1.00 per month (unchanged)"
    assert_ledger_invariants(ledger)


def figures_before(allocated: int, spent: int) -> dict[str, Any]:
    """A budget's flat figures with nothing held, no debt and no overdraft."""
    return {
        "unit": UNIT,
        "allocated": allocated,
        "spent": spent,
        "reserved": 0,
        "debt": 0,
        "remaining": allocated - spent,
        "overdraft_limit": 0,
        "is_over_limit": False,
        "status": "ACTIVE",
    }


def test_a_plan_is_described_with_its_period() -> None:
    assert describe(Plan("pro", 5_000_000_000, "month")) == "pro, $50.00 per month"
    assert describe(Plan("flat", 100, "none")) == "flat, $0.000001 never reset"
