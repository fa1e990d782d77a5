"""The embedded ledger keeps its budgets across restarts, and says (one WARNING line) when
the settings would make them differently, naming the command that applies the settings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from conftest import budget_scope
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close, local_server

DRIFT = "Cycles: the embedded ledger keeps the budgets it has"


def started(tmp_path: Path, **extra: str) -> Flask:
    env = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": "local",
        "CYCLES_LOCAL_DB": str(tmp_path / "ledger.sqlite3"),
        "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        "LLM_PROVIDER": "fake",
    }
    app = create_app({**env, **extra})
    assert local_server(app) is not None  # the ledger starts (and is seeded) now
    return app


@pytest.fixture
def restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Callable[..., list[str]]]:
    """``restart(**settings)``: stop the previous app, start one; its drift lines."""
    apps: list[Flask] = []

    def run(**extra: str) -> list[str]:
        while apps:
            close(apps.pop())
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            apps.append(started(tmp_path, **extra))
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(DRIFT)]

    yield run
    for app in apps:
        close(app)


def test_a_changed_local_budget_is_named_with_the_command_that_applies_it(
    restart: Callable[..., list[str]],
) -> None:
    assert restart(CYCLES_LOCAL_BUDGET_USD="5.00") == []  # a new ledger: made as set
    assert restart(CYCLES_LOCAL_BUDGET_USD="5.00") == []  # unchanged
    assert restart(CYCLES_LOCAL_BUDGET_USD="0.001") == [
        f"{DRIFT}, and these differ from the settings: acme $5.00 "
        "(CYCLES_LOCAL_BUDGET_USD=0.001), globex $5.00 (CYCLES_LOCAL_BUDGET_USD=0.001); "
        "to apply the settings run `flask cycles set-budget acme 0.001`, "
        "`flask cycles set-budget globex 0.001`"
    ]


def test_a_changed_plan_names_provision(restart: Callable[..., list[str]]) -> None:
    assert restart(CYCLES_LOCAL_BUDGET_USD="5.00") == []
    assert restart(
        CYCLES_LOCAL_BUDGET_USD="5.00", BUDGET_PLANS="pro=50/month", TENANT_PLANS="acme=pro"
    ) == [
        f"{DRIFT}, and these differ from the settings: acme $5.00 (plan pro: $50.00); "
        "to apply the settings run `flask cycles provision`"
    ]


def test_a_new_budget_is_made_with_the_tenants_plan(tmp_path: Path) -> None:
    app = started(
        tmp_path,
        CYCLES_LOCAL_BUDGET_USD="5.00",
        BUDGET_PLANS="pro=50/month",
        TENANT_PLANS="acme=pro",
    )
    try:
        embedded = local_server(app)
        assert embedded is not None
        allocations = {
            tenant: (embedded.ledger.budget(budget_scope(tenant)) or {}).get("allocated")
            for tenant in ("acme", "globex")
        }
        assert allocations == {"acme": 5_000_000_000, "globex": 500_000_000}
    finally:
        close(app)
