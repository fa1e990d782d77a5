"""The caller's own budget row in an answer that lists balances, and no other scope's."""

from __future__ import annotations

from typing import Any

from conftest import budget_scope
from {{ cookiecutter.package_name }}.cycles.clients import Balance
from {{ cookiecutter.package_name }}.cycles.scope_balance import balance_of, is_own, own_balance
from support.config_kit import load
from support.tenancy_kit import cycles_settings

SETTINGS = load(**cycles_settings(("acme", "globex")))


def row(scope: str, remaining: int, **amounts: int) -> dict[str, Any]:
    wire = {name: {"unit": "USD_MICROCENTS", "amount": a} for name, a in amounts.items()}
    amount = {"unit": "USD_MICROCENTS", "amount": remaining}
    return {"scope": scope.rsplit("/", 1)[-1], "scope_path": scope, "remaining": amount, **wire}


def test_the_callers_row_is_picked_among_wider_and_narrower_scopes() -> None:
    own = budget_scope("acme")
    rows = [
        row(own.rsplit("/", 1)[0] if "/" in own else "tenant:everyone", 1),
        row(own, 40, allocated=100, spent=50, reserved=10, debt=0),
        row(f"{own}/app:chat", 2),
    ]
    assert own_balance(SETTINGS, "acme", rows) == Balance(own, 100, 50, 10, 40, 0)


def test_another_tenants_row_is_never_taken() -> None:
    rows = [row(budget_scope("globex"), 99, allocated=99)]
    assert own_balance(SETTINGS, "acme", rows) is None


def test_scopes_compare_as_cycles_lower_cases_them() -> None:
    assert is_own(SETTINGS, "acme", budget_scope("acme").upper())
    assert not is_own(SETTINGS, "acme", budget_scope("acme") + "/app:x")


def test_what_is_not_a_balance_row_gives_none() -> None:
    own = budget_scope("acme")
    assert own_balance(SETTINGS, "acme", None) is None
    assert own_balance(SETTINGS, "acme", {"scope_path": own}) is None
    assert own_balance(SETTINGS, "acme", ["x", {"scope_path": own}]) is None
    no_amount = {"scope_path": own, "remaining": {"unit": "USD_MICROCENTS", "amount": True}}
    assert balance_of(no_amount) is None


def test_absent_amounts_read_as_zero_but_remaining_is_required() -> None:
    assert balance_of(row("tenant:acme", -5)) == Balance("tenant:acme", 0, 0, 0, -5, 0)
