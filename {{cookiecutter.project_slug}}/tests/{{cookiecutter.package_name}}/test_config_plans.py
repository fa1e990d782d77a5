"""Budget plans' settings: parsed exactly, and every bad value one line naming its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Plan, Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings

# The embedded ledger's development tenants (acme, globex) are the app's tenants here.
BASE = {"APP_ENV": "testing"}
PLANS = "free=1.00/month, pro=50/Week,flat=0.00000001/none,daily=0.5/day"


def settings(tmp_path: Path, **env: str) -> Settings:
    return read_settings({**BASE, **env}, tmp_path)


def problems(tmp_path: Path, **env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **env)
    return caught.value.problems


def test_no_plans_is_the_default(tmp_path: Path) -> None:
    found = settings(tmp_path)
    assert found.budget_plans == {} and found.tenant_plans == {}
    assert found.plan_for("acme") is None
    assert found.budget_rollover_state == tmp_path / "budget-rollover.json"
    assert found.cycles_local_rollover is False  # tests: off unless asked


def test_plans_and_each_tenants_plan(tmp_path: Path) -> None:
    found = settings(
        tmp_path,
        BUDGET_PLANS=PLANS,
        TENANT_PLANS="acme=pro",
        DEFAULT_PLAN="free",
        BUDGET_ROLLOVER_STATE=str(tmp_path / "state.json"),
        CYCLES_LOCAL_ROLLOVER="true",
    )
    assert found.budget_plans == {
        "free": Plan("free", 100_000_000, "month"),
        "pro": Plan("pro", 5_000_000_000, "week"),
        "flat": Plan("flat", 1, "none"),
        "daily": Plan("daily", 50_000_000, "day"),
    }
    assert found.plan_for("acme") == Plan("pro", 5_000_000_000, "week")
    assert found.plan_for("globex") == Plan("free", 100_000_000, "month")  # DEFAULT_PLAN
    assert found.plan_for("initech") is None  # not a tenant of the app
    assert found.budget_rollover_state == tmp_path / "state.json"
    assert found.cycles_local_rollover is True


def test_a_plan_may_set_each_end_users_allocation(tmp_path: Path) -> None:
    found = settings(
        tmp_path,
        BUDGET_PLANS="free=1/month, pro=50/month/user=1.25, team=10/week/user=10",
        TENANT_PLANS="acme=pro",
    )
    assert found.budget_plans["pro"] == Plan("pro", 5_000_000_000, "month", 125_000_000)
    assert found.budget_plans["team"].per_user == 1_000_000_000  # the whole plan: allowed
    assert found.budget_plans["free"].per_user is None  # END_USER_BUDGET_USD's
    # A plan's per-user amount turns end-user budgets on: with no END_USER_BUDGET_USD the
    # end users of a tenant whose plan sets none get nothing (refused, never unbudgeted).
    assert found.end_user_allocation == 0


def test_without_a_default_a_tenant_not_mapped_has_no_plan(tmp_path: Path) -> None:
    found = settings(tmp_path, BUDGET_PLANS=PLANS, TENANT_PLANS="globex=daily")
    assert found.plan_for("acme") is None
    assert found.tenant_plans == {"globex": "daily"}


def test_development_with_the_embedded_ledger_rolls_over_by_default(tmp_path: Path) -> None:
    assert settings(tmp_path, APP_ENV="development").cycles_local_rollover is True


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"BUDGET_PLANS": "pro"},
            "BUDGET_PLANS: entry 1 'pro' is invalid: expected "
            "name=USD/period[/user=USD] like pro=50.00/month/user=1.00",
        ),
        (
            {"BUDGET_PLANS": "free=1/month,pro=50"},
            "BUDGET_PLANS: entry 2 'pro=50' is invalid: expected "
            "name=USD/period[/user=USD] like pro=50.00/month/user=1.00",
        ),
        (
            {"BUDGET_PLANS": "Pro=5/month"},
            "BUDGET_PLANS: plan name 'Pro' is invalid: expected 1-32 lowercase letters, "
            "digits, '_' or '-', starting with a letter",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month,pro=6/day"},
            "BUDGET_PLANS: plan 'pro' is defined twice",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month/user=abc"},
            "BUDGET_PLANS: plan 'pro': user amount is invalid: 'abc' is not an amount of US "
            "dollars like 5.00",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month/user=-1"},
            "BUDGET_PLANS: plan 'pro': user amount is invalid: '-1' is not an amount of US "
            "dollars like 5.00",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month/user=Infinity"},
            "BUDGET_PLANS: plan 'pro': user amount is invalid: 'Infinity' is not an amount of "
            "US dollars like 5.00",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month/user=5.01"},
            "BUDGET_PLANS: plan 'pro': user amount '5.01' is above the plan's allocation ($5.00)",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month/seats=3"},
            "BUDGET_PLANS: entry 1 'pro=5/month/seats=3' is invalid: expected "
            "name=USD/period[/user=USD] like pro=50.00/month/user=1.00",
        ),
        (
            {"BUDGET_PLANS": "pro=5/year"},
            "BUDGET_PLANS: plan 'pro': period 'year' is invalid: expected day, week, month or none",
        ),
        (
            {"BUDGET_PLANS": "pro=five/month"},
            "BUDGET_PLANS: plan 'pro': amount is invalid: 'five' is not an amount of US "
            "dollars like 5.00",
        ),
        (
            {"BUDGET_PLANS": "pro=-5/month"},
            "BUDGET_PLANS: plan 'pro': amount is invalid: '-5' is not an amount of US "
            "dollars like 5.00",
        ),
        (
            {"BUDGET_PLANS": "pro=0.000000001/month"},
            "BUDGET_PLANS: plan 'pro': amount is invalid: '0.000000001' has more than 8 "
            "decimals (1 microcent)",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "DEFAULT_PLAN": "gold"},
            "DEFAULT_PLAN='gold' is not a plan (BUDGET_PLANS defines pro)",
        ),
        (
            {"DEFAULT_PLAN": "gold"},
            "DEFAULT_PLAN='gold' is not a plan (BUDGET_PLANS defines none)",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "TENANT_PLANS": "acme=gold"},
            "TENANT_PLANS: tenant 'acme': plan 'gold' is not a plan (BUDGET_PLANS defines pro)",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "TENANT_PLANS": "acme=pro,acme=pro"},
            "TENANT_PLANS: tenant 'acme' is given a plan twice",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "TENANT_PLANS": "Acme=pro"},
            "TENANT_PLANS: tenant id 'Acme' is invalid: expected 3-64 lowercase letters, "
            "digits or '-', starting and ending with a letter or digit",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "TENANT_PLANS": "acme"},
            "TENANT_PLANS: entry 1 'acme' is invalid: expected tenant=plan",
        ),
        (
            {"BUDGET_PLANS": "pro=5/month", "TENANT_PLANS": "initech=pro"},
            "TENANT_PLANS: tenant 'initech' is not a tenant of this app",
        ),
        (
            {"CYCLES_LOCAL_ROLLOVER": "sometimes"},
            "CYCLES_LOCAL_ROLLOVER='sometimes' is invalid: expected true or false",
        ),
    ],
)
def test_each_bad_setting_is_one_line_naming_it(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    assert problems(tmp_path, **env) == (problem,)


def test_a_broken_plan_table_does_not_also_fail_the_mapping(tmp_path: Path) -> None:
    """Only the real problem is reported, not its consequences for TENANT_PLANS."""
    found = problems(
        tmp_path, BUDGET_PLANS="pro=5/year", TENANT_PLANS="acme=pro", DEFAULT_PLAN="pro"
    )
    assert len(found) == 1 and found[0].startswith("BUDGET_PLANS: plan 'pro': period")
