"""End users' budgets: where they live, made once, and read back for their tenant only."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, budget_scope
from {{ cookiecutter.package_name }}.budget.end_users import (
    end_user_balances,
    end_user_budgets,
    scope_of,
)
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.cycles.clients import Balance
from {{ cookiecutter.package_name }}.errors import ApiError
from localcycles import LocalCyclesServer


def row(scope: str) -> Balance:
    return Balance(scope, 10, 1, 0, 9, 0)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_only_the_end_users_own_rows_by_whole_segment() -> None:
    rows = [
        row("tenant:a/app:x"),
        row("tenant:a/app:x/agent:bob"),
        row("tenant:a/app:x/agent:bobby"),
    ]
    assert end_user_balances(rows, "bob") == [rows[1]]
    with pytest.raises(ApiError) as missing:
        end_user_balances(rows, "carol")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as invalid:
        end_user_balances(rows, "Bob")
    assert invalid.value.status == 400 and "user:" in invalid.value.message


def test_an_end_users_scope_is_below_the_tenants_app(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    budget = budget_service(make_app(cycles_server.base_url))
    assert scope_of(budget, "acme", "bob") == f"{budget_scope('acme')}/app:test-app/agent:bob"


def test_ensure_makes_the_budget_once_and_keeps_an_existing_one(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    def ensure(app: Flask) -> None:
        end_user_budgets(app).ensure(budget_service(app), "acme", "bob")

    settings = {
        "END_USER_BUDGET_USD": "2",
        "CYCLES_ADMIN_URL": cycles_server.base_url,
        "CYCLES_ADMIN_API_KEY": ADMIN_KEY,
    }
    first, second = (
        make_app(cycles_server.base_url, **settings),
        make_app(cycles_server.base_url, **settings),
    )
    scope = scope_of(budget_service(first), "acme", "bob")
    ensure(first)
    created = provisioner.ledger.budget(scope, UNIT)
    assert created is not None and created["allocated"] == 200_000_000
    provisioner.ledger.set_budget(scope, UNIT, allocated=7)
    ensure(first)  # known to this app: no admin call
    ensure(second)  # another worker: the admin API answers that it exists
    found = provisioner.ledger.budget(scope, UNIT)
    assert found is not None and found["allocated"] == 7


@pytest.mark.parametrize(
    ("end_user_usd", "globex_allocation"), [({"END_USER_BUDGET_USD": "2"}, 200_000_000), ({}, 0)]
)
def test_a_new_end_users_allocation_is_the_plans_else_the_setting(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    end_user_usd: dict[str, str],
    globex_allocation: int,
) -> None:
    app = make_app(
        cycles_server.base_url,
        BUDGET_PLANS="pro=50/month/user=1.00,free=1/month",
        TENANT_PLANS="acme=pro,globex=free",
        CYCLES_ADMIN_URL=cycles_server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
        **end_user_usd,
    )
    budget = budget_service(app)
    for tenant in ("acme", "globex"):
        end_user_budgets(app).ensure(budget, tenant, "bob")
    acme = provisioner.ledger.budget(scope_of(budget, "acme", "bob"), UNIT)
    globex = provisioner.ledger.budget(scope_of(budget, "globex", "bob"), UNIT)
    assert acme is not None and acme["allocated"] == 100_000_000  # pro's user=1.00
    assert globex is not None and globex["allocated"] == globex_allocation


def test_an_unreachable_admin_api_is_a_503(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        cycles_server.base_url,
        END_USER_BUDGET_USD="2",
        CYCLES_ADMIN_URL=f"http://127.0.0.1:{closed_port()}",
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
    )
    with pytest.raises(ApiError) as caught:
        end_user_budgets(app).ensure(budget_service(app), "acme", "bob")
    assert (caught.value.status, caught.value.error) == (503, "cycles_unavailable")
    assert provisioner.ledger.budget(scope_of(budget_service(app), "acme", "bob"), UNIT) is None
