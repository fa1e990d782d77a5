"""`flask cycles rollover`, `set-budget` and `reset`, on the embedded ledger and on a Cycles
server's admin API (the embedded server speaks it, as cycles-admin does), over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, budget_scope
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close, cycles_clients, local_server
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from localcycles import LocalCyclesServer, LocalLedger
from support.localcycles_kit import assert_ledger_invariants, reservation_body
from support.tenancy_kit import cycles_tenant_of

MARCH_2 = datetime(2027, 3, 2, 10, tzinfo=UTC)


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture
def local_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``local_app(**settings)``: an app on its embedded ledger, as on a fresh checkout."""
    apps: list[Flask] = []

    def make(**extra: str) -> Flask:
        env = {
            "APP_ENV": "testing",
            "CYCLES_BASE_URL": "local",
            "CYCLES_LOCAL_DB": str(tmp_path / "ledger.sqlite3"),
            "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
            "LLM_PROVIDER": "fake",
            "CYCLES_LOCAL_BUDGET_USD": "5.00",
            "BUDGET_ROLLOVER_STATE": str(tmp_path / "rollover.json"),
        }
        app = create_app({**env, **extra})
        app.extensions[CLOCK] = lambda: MARCH_2
        apps.append(app)
        return app

    yield make
    for app in apps:
        close(app)


def ledger_of(app: Flask) -> LocalLedger:
    embedded = local_server(app)
    assert embedded is not None
    return embedded.ledger


def spend(app: Flask, tenant: str, amount: int) -> None:
    """A hold and its commit on the app's embedded ledger, with the app's own key."""
    embedded = local_server(app)
    assert embedded is not None
    headers = {"X-Cycles-API-Key": embedded.api_key_for(tenant)}
    subject = cycles_clients(app).subject_body(tenant)
    with httpx.Client(base_url=embedded.base_url, headers=headers) as http:
        held = http.post("/v1/reservations", json=reservation_body(amount, subject=subject))
        assert held.status_code == 200, held.text
        committed = http.post(
            f"/v1/reservations/{held.json()['reservation_id']}/commit",
            json={"idempotency_key": "c1", "actual": {"unit": UNIT, "amount": amount}},
        )
        assert committed.status_code == 200, committed.text


def test_set_budget_gives_a_tenant_a_tiny_budget_and_keeps_its_spend(
    local_app: Callable[..., Flask],
) -> None:
    app = local_app()
    spend(app, "acme", 30_000)
    result = invoke(app, "cycles", "set-budget", "acme", "0.001")
    assert result.exit_code == 0, result.output
    scope = budget_scope("acme")
    assert result.output == f"{scope}: allocated $5.00 -> $0.001; remaining $0.0007\n"
    found = ledger_of(app).budget(scope) or {}
    assert (found["allocated"], found["spent"], found["remaining"]) == (100_000, 30_000, 70_000)
    assert_ledger_invariants(ledger_of(app))


def test_reset_sets_spent_back_to_zero_and_keeps_the_allocation(
    local_app: Callable[..., Flask],
) -> None:
    app = local_app()
    spend(app, "acme", 12_345)
    result = invoke(app, "cycles", "reset", "acme")
    assert result.exit_code == 0, result.output
    scope = budget_scope("acme")
    assert result.output == f"{scope}: spent $0.00012345 -> $0.00; remaining $5.00\n"
    found = ledger_of(app).budget(scope) or {}
    assert (found["allocated"], found["spent"]) == (500_000_000, 0)
    assert_ledger_invariants(ledger_of(app))


def test_set_budget_with_a_plan_says_the_rollover_sets_it_back(
    local_app: Callable[..., Flask],
) -> None:
    app = local_app(BUDGET_PLANS="pro=50/month", DEFAULT_PLAN="pro")
    result = invoke(app, "cycles", "set-budget", "globex", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{budget_scope('globex')}: allocated $50.00 -> $1.00; remaining $1.00",
        "(plan pro, $50.00 per month: the next rollover sets it back)",
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("set-budget", "initech", "1"), 1, "'initech' is not a tenant of this app"),
        (("reset", "initech"), 1, "'initech' is not a tenant of this app"),
        (("set-budget", "Acme", "1"), 2, "Invalid value for TENANT: 'Acme': expected"),
        (("set-budget", "acme", "lots"), 2, "'lots' is not an amount of US dollars like 5.00"),
        (("set-budget", "acme", "0.000000001"), 2, "'0.000000001' has more than 8 decimals"),
    ],
)
def test_bad_arguments_are_one_clear_line(
    local_app: Callable[..., Flask], args: tuple[str, ...], code: int, message: str
) -> None:
    result = invoke(local_app(), "cycles", *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [("set-budget", "acme", "1"), ("reset", "acme"), ("rollover",)])
def test_a_server_without_the_admin_key_is_named(
    cycles_server: LocalCyclesServer,
    make_app: Callable[..., Flask],
    command: tuple[str, ...],
) -> None:
    app = make_app(
        cycles_server.base_url,
        CYCLES_ADMIN_URL=cycles_server.base_url,
        BUDGET_PLANS="pro=1/day",
        DEFAULT_PLAN="pro",
    )
    result = invoke(app, "cycles", *command)
    assert result.exit_code == 1
    assert result.output == "Error: CYCLES_ADMIN_API_KEY is not set (the admin server's key)\n"


def test_reset_of_a_tenant_without_a_budget_names_provision(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        cycles_server.base_url,
        CYCLES_ADMIN_URL=cycles_server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
    )
    cycles_server.ledger.create_tenant(cycles_tenant_of("acme"))
    result = invoke(app, "cycles", "reset", "acme")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: acme has no budget at {budget_scope('acme')}: "
        "create it with `flask cycles provision acme`\n"
    )


def test_rollover_through_a_servers_admin_api(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    provisioner = Provisioner(cycles_server.ledger)
    for tenant in ("acme", "globex"):
        provisioner.tenant(tenant)
    app = make_app(
        cycles_server.base_url,
        CYCLES_ADMIN_URL=cycles_server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
        BUDGET_PLANS="daily=0.25/day,flat=1/none",
        TENANT_PLANS="acme=daily,globex=flat",
        BUDGET_ROLLOVER_STATE=str(tmp_path / "rollover.json"),
    )
    moment = [MARCH_2]
    app.extensions[CLOCK] = lambda: moment[0]
    scope = budget_scope("acme")
    first = invoke(app, "cycles", "rollover")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        f"acme ({scope}, plan daily): tracked from the day from 2027-03-02T00:00:00Z; "
        "first reset at 2027-03-03T00:00:00Z",
    ]  # globex's plan has no period: nothing to say
    cycles_server.ledger.fund(scope, UNIT, "RESET_SPENT", 100_000_000, spent=777)
    moment[0] = datetime(2027, 3, 5, 12, tzinfo=UTC)
    second = invoke(app, "cycles", "rollover")
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[0] == (
        f"acme ({scope}, plan daily): spent reset for the day from 2027-03-05T00:00:00Z; "
        "next at 2027-03-06T00:00:00Z"
    )
    found = cycles_server.ledger.budget(scope) or {}
    assert (found["allocated"], found["spent"]) == (25_000_000, 0)
    third = invoke(app, "cycles", "rollover")
    assert "already rolled over to the day from 2027-03-05T00:00:00Z" in third.output
    assert_ledger_invariants(cycles_server.ledger)


def test_rollover_of_the_embedded_ledger(local_app: Callable[..., Flask]) -> None:
    app = local_app(BUDGET_PLANS="weekly=2/week", DEFAULT_PLAN="weekly")
    assert invoke(app, "cycles", "rollover").exit_code == 0
    spend(app, "acme", 5_000)
    app.extensions[CLOCK] = lambda: datetime(2027, 3, 8, tzinfo=UTC)  # the next Monday
    result = invoke(app, "cycles", "rollover")
    assert result.exit_code == 0, result.output
    assert result.output.count("spent reset for the week from 2027-03-08T00:00:00Z") == 2
    assert (ledger_of(app).budget(budget_scope("acme")) or {})["spent"] == 0


def test_rollover_prints_a_line_for_each_end_user(local_app: Callable[..., Flask]) -> None:
    app = local_app(BUDGET_PLANS="pro=5/day/user=1", TENANT_PLANS="acme=pro")
    first = invoke(app, "cycles", "rollover")
    assert first.exit_code == 0, first.output
    scope = budget_scope("acme")
    assert first.output.splitlines()[1:] == [
        f"acme's end users ({scope}/agent:*, plan pro): tracked from the day from "
        "2027-03-02T00:00:00Z; first reset at 2027-03-03T00:00:00Z"
    ]
    bob = f"{scope}/app:x/agent:bob"
    ledger_of(app).set_budget(bob, UNIT, allocated=100_000_000)
    ledger_of(app).fund(bob, UNIT, "RESET_SPENT", 100_000_000, spent=777)
    app.extensions[CLOCK] = lambda: datetime(2027, 3, 3, tzinfo=UTC)
    result = invoke(app, "cycles", "rollover")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        f"acme end user bob ({bob}, plan pro): spent reset for the day from "
        "2027-03-03T00:00:00Z; next at 2027-03-04T00:00:00Z"
    ]
    assert (ledger_of(app).budget(bob) or {})["spent"] == 0


def test_rollover_without_plans_says_there_is_nothing_to_do(
    local_app: Callable[..., Flask],
) -> None:
    result = invoke(local_app(), "cycles", "rollover")
    assert result.exit_code == 0
    assert result.output == (
        "no tenant has a plan with a period (BUDGET_PLANS): nothing to roll over\n"
    )


def test_provision_applies_plans(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    settings = {
        "CYCLES_ADMIN_URL": cycles_server.base_url,
        "CYCLES_ADMIN_API_KEY": ADMIN_KEY,
        "BUDGET_PLANS": "pro=50/month",
        "TENANT_PLANS": "acme=pro",
    }
    keys_file = str(tmp_path / "cycles.env")
    app = make_app(cycles_server.base_url, **settings)
    first = invoke(app, "cycles", "provision", "--budget-usd", "2", "--keys-file", keys_file)
    assert first.exit_code == 0, first.output
    acme, globex = (cycles_server.ledger.budget(budget_scope(t)) or {} for t in ("acme", "globex"))
    assert (acme["allocated"], globex["allocated"]) == (5_000_000_000, 200_000_000)
    assert f"budget {budget_scope('acme')}: plan pro, $50.00 per month (created)" in first.output
    # The plan changes; a re-run resizes the existing budget and keeps its spend.
    cycles_server.ledger.fund(budget_scope("acme"), UNIT, "RESET_SPENT", 5_000_000_000, spent=99)
    changed = make_app(cycles_server.base_url, **{**settings, "BUDGET_PLANS": "pro=60/month"})
    again = invoke(changed, "cycles", "provision", "--keys-file", keys_file)
    assert again.exit_code == 0, again.output
    assert f"budget {budget_scope('acme')}: plan pro, $60.00 per month (was $50.00)" in again.output
    acme = cycles_server.ledger.budget(budget_scope("acme")) or {}
    assert (acme["allocated"], acme["spent"]) == (6_000_000_000, 99)
    assert_ledger_invariants(cycles_server.ledger)


def test_rollover_exits_1_when_a_budget_could_not_roll_over(
    local_app: Callable[..., Flask],
) -> None:
    app = local_app(BUDGET_PLANS="daily=1/day", DEFAULT_PLAN="daily")
    assert invoke(app, "cycles", "rollover").exit_code == 0
    with ledger_of(app).db.write() as conn:
        conn.execute("DELETE FROM budgets WHERE scope = ?", (budget_scope("acme"),))
    app.extensions[CLOCK] = lambda: datetime(2027, 3, 3, tzinfo=UTC)
    result = invoke(app, "cycles", "rollover")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "acme" in lines[0] and "not rolled over" in lines[0]
    assert "globex" in lines[1] and "spent reset" in lines[1]
    assert lines[-1] == "Error: 1 budget(s) not rolled over (see above)"
