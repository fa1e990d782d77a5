"""END_USER_BUDGET_USD: off by default, an exact allocation, an admin API where one is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings

BASE = {"APP_ENV": "testing"}
REMOTE = {"CYCLES_BASE_URL": "http://cycles:7878", **BASE}


def settings(tmp_path: Path, env: dict[str, str]) -> Settings:
    return read_settings(env, tmp_path)


def problems(tmp_path: Path, env: dict[str, str]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, env)
    return caught.value.problems


def test_off_by_default(tmp_path: Path) -> None:
    assert settings(tmp_path, BASE).end_user_allocation is None


def test_the_allocation_in_microcents(tmp_path: Path) -> None:
    found = settings(tmp_path, {**BASE, "END_USER_BUDGET_USD": "0.25"})
    assert found.end_user_allocation == 25_000_000


def test_a_bad_amount_names_the_setting(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, {**BASE, "END_USER_BUDGET_USD": "-1"})
    assert problem.startswith("END_USER_BUDGET_USD='-1' is invalid")


def test_a_remote_cycles_needs_its_admin_api(tmp_path: Path) -> None:
    found = problems(tmp_path, {**REMOTE, "END_USER_BUDGET_USD": "1"})
    assert (
        "CYCLES_ADMIN_URL is required with END_USER_BUDGET_USD (the app creates budgets)" in found
    )
    assert any(
        p.startswith("CYCLES_ADMIN_API_KEY is required with END_USER_BUDGET_USD") for p in found
    )


def test_a_plans_per_user_amount_turns_them_on(tmp_path: Path) -> None:
    plans = {"BUDGET_PLANS": "pro=50/month/user=1"}
    assert settings(tmp_path, {**BASE, **plans}).end_user_allocation == 0
    set_too = {**BASE, **plans, "END_USER_BUDGET_USD": "0.25"}
    assert settings(tmp_path, set_too).end_user_allocation == 25_000_000
    found = problems(tmp_path, {**REMOTE, **plans})
    assert (
        "CYCLES_ADMIN_URL is required with BUDGET_PLANS' user=USD (the app creates budgets)"
        in found
    )
