"""Rollover against a real embedded Cycles server over HTTP, on clocks the test sets.

The server's clock (epoch ms) and the app's wall clock show one instant the test moves, so
a boundary is crossed by setting the time, never by waiting. Spend goes through the app's
guarded route; the rollover goes through the admin API, as `flask cycles rollover` sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from conftest import TENANTS, UNIT, Provisioner, budget_scope, cycles_key
from {{ cookiecutter.package_name }}.budget.plans import planned_budgets
from {{ cookiecutter.package_name }}.budget.rollover import roll_over, rollover_key
from {{ cookiecutter.package_name }}.budget.rollover_state import RolloverState
from {{ cookiecutter.package_name }}.config import app_settings
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from {{ cookiecutter.package_name }}.cycles.clients import cycles_clients
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from localcycles import LocalCyclesServer
from support.localcycles_kit import assert_ledger_invariants, reservation_body
from support.tenancy_kit import cycles_tenant_of

ADMIN_KEY = "test-admin-key"
PLANS = "daily=0.50/day,weekly=2/week,monthly=10/month,flat=3/none"
START = datetime(2027, 3, 2, 10, 0, tzinfo=UTC)  # a Tuesday


class Clocks:
    """One instant, for the Cycles server (epoch ms) and the app (a UTC datetime)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def server(self) -> int:
        return int(self.moment.timestamp() * 1000)

    def app(self) -> datetime:
        return self.moment


@pytest.fixture
def clocks() -> Clocks:
    return Clocks(START)


@pytest.fixture
def server(tmp_path: Path, clocks: Clocks) -> Iterator[LocalCyclesServer]:
    path = str(tmp_path / "rollover.sqlite3")
    running = LocalCyclesServer(path, admin_key=ADMIN_KEY, clock=clocks.server).start()
    provisioner = Provisioner(running.ledger)
    for tenant in TENANTS:
        provisioner.tenant(tenant)
    yield running
    running.stop()
    running.ledger.close()


class Rollovers:
    """Runs the rollover of ``app``'s planned budgets as the command does."""

    def __init__(self, app: Flask, server: LocalCyclesServer, state_path: Path) -> None:
        self.app = app
        self.admin = Endpoint(server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
        self.state = RolloverState(state_path, server.base_url)

    def __call__(self) -> dict[str, str]:
        budgets = planned_budgets(app_settings(self.app))
        now = self.app.extensions[CLOCK]()
        return {
            done.budget.tenant: done.outcome
            for done in roll_over(self.admin, budgets, self.state, now)
        }


@pytest.fixture
def planned(
    make_app: Callable[..., Flask], server: LocalCyclesServer, clocks: Clocks, tmp_path: Path
) -> Callable[..., tuple[Flask, Rollovers]]:
    def make(**plans: str) -> tuple[Flask, Rollovers]:
        app = make_app(server.base_url, **{"BUDGET_PLANS": PLANS, **plans})
        app.extensions[CLOCK] = clocks.app
        return app, Rollovers(app, server, tmp_path / "rollover.json")

    return make


def spend(app: Flask, server: LocalCyclesServer, tenant: str = "acme", cost: int = 4_321) -> int:
    """Charge ``cost`` to ``tenant``'s budget as the guard does: a hold, then its commit."""
    commit(server, hold(app, server, cost, tenant=tenant), cost, tenant=tenant)
    return cost


def budget(server: LocalCyclesServer, tenant: str = "acme") -> dict[str, Any]:
    found = server.ledger.budget(budget_scope(tenant), UNIT)
    assert found is not None
    return found


def rollover_keys(server: LocalCyclesServer) -> list[str]:
    """The idempotency keys of every RESET_SPENT a rollover sent, oldest first."""
    with server.ledger.db.read() as conn:
        rows = conn.execute(
            "SELECT key FROM idempotency WHERE key LIKE 'rollover:%' ORDER BY created_at_ms, key"
        ).fetchall()
    return [row["key"] for row in rows]


@pytest.mark.parametrize(
    ("plan", "allocated", "boundary"),
    [
        ("daily", 50_000_000, datetime(2027, 3, 3, tzinfo=UTC)),
        ("weekly", 200_000_000, datetime(2027, 3, 8, tzinfo=UTC)),  # the next Monday
        ("monthly", 1_000_000_000, datetime(2027, 4, 1, tzinfo=UTC)),
    ],
)
def test_spend_resets_once_at_the_period_boundary(
    planned: Callable[..., tuple[Flask, Rollovers]],
    server: LocalCyclesServer,
    clocks: Clocks,
    plan: str,
    allocated: int,
    boundary: datetime,
) -> None:
    app, rollover = planned(TENANT_PLANS=f"acme={plan}")
    assert rollover() == {"acme": "tracked"}  # first seen: from this period, no reset
    cost = spend(app, server)
    assert budget(server)["spent"] == cost

    clocks.moment = boundary - timedelta(seconds=1)
    assert rollover() == {"acme": "current"}
    assert budget(server)["spent"] == cost and rollover_keys(server) == []

    clocks.moment = boundary
    assert rollover() == {"acme": "reset"}
    after = budget(server)
    assert (after["spent"], after["allocated"], after["remaining"]) == (0, allocated, allocated)
    assert rollover_keys(server) == [rollover_key(budget_scope("acme"), boundary)]
    assert budget(server, "globex")["spent"] == 0  # no plan: not touched (and nothing spent)
    assert_ledger_invariants(server.ledger)

    # Every minute of the new period: nothing happens, spend accrues.
    second = spend(app, server, cost=1_234)
    for minutes in (1, 60, 600):
        clocks.moment = boundary + timedelta(minutes=minutes)
        assert rollover() == {"acme": "current"}
    assert budget(server)["spent"] == second
    assert len(rollover_keys(server)) == 1
    assert_ledger_invariants(server.ledger)


def test_a_missed_period_rolls_over_once(
    planned: Callable[..., tuple[Flask, Rollovers]], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = planned(DEFAULT_PLAN="monthly")
    assert rollover() == {"acme": "tracked", "globex": "tracked"}
    spend(app, server)
    spend(app, server, "globex")
    clocks.moment = datetime(2027, 6, 15, 8, tzinfo=UTC)  # down for three month boundaries
    assert rollover() == {"acme": "reset", "globex": "reset"}
    june = datetime(2027, 6, 1, tzinfo=UTC)
    assert rollover_keys(server) == sorted(rollover_key(budget_scope(t), june) for t in TENANTS)
    cost = spend(app, server)
    assert rollover() == {"acme": "current", "globex": "current"}
    assert budget(server)["spent"] == cost and budget(server, "globex")["spent"] == 0
    assert_ledger_invariants(server.ledger)


def hold(
    app: Flask, server: LocalCyclesServer, amount: int, tenant: str = "acme", **extra: Any
) -> str:
    """A live reservation of ``amount`` on ``tenant``'s budget, made over HTTP."""
    key = cycles_key(cycles_tenant_of(tenant))
    body = reservation_body(amount, subject=cycles_clients(app).subject_body(tenant), **extra)
    answer = httpx.post(
        f"{server.base_url}/v1/reservations", json=body, headers={"X-Cycles-API-Key": key}
    )
    assert answer.status_code == 200, answer.text
    reservation_id: str = answer.json()["reservation_id"]
    return reservation_id


def commit(
    server: LocalCyclesServer, reservation_id: str, actual: int, tenant: str = "acme"
) -> None:
    answer = httpx.post(
        f"{server.base_url}/v1/reservations/{reservation_id}/commit",
        json={
            "idempotency_key": f"commit-{reservation_id}",
            "actual": {"unit": UNIT, "amount": actual},
        },
        headers={"X-Cycles-API-Key": cycles_key(cycles_tenant_of(tenant))},
    )
    assert answer.status_code == 200, answer.text


def test_live_holds_and_debt_survive_the_rollover_as_reset_spent_defines(
    planned: Callable[..., tuple[Flask, Rollovers]], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = planned(TENANT_PLANS="acme=daily")
    rollover()
    # A hold that straddles the boundary, and debt: a small allocation with an overdraft,
    # overrun by a commit.
    clocks.moment = datetime(2027, 3, 2, 23, 50, tzinfo=UTC)
    live = hold(app, server, 200, ttl_ms=3_600_000)
    server.ledger.set_budget(budget_scope("acme"), UNIT, allocated=1_000, overdraft_limit=5_000)
    overrun = hold(app, server, 500, overage_policy="ALLOW_WITH_OVERDRAFT")
    commit(server, overrun, 3_000)
    before = budget(server)
    assert before["reserved"] == 200 and before["debt"] > 0 and before["spent"] > 0
    debt = before["debt"]

    clocks.moment = datetime(2027, 3, 3, tzinfo=UTC)
    assert rollover() == {"acme": "reset"}
    after = budget(server)
    assert (after["spent"], after["reserved"], after["debt"]) == (0, 200, debt)
    assert after["allocated"] == 50_000_000
    assert after["remaining"] == 50_000_000 - 200 - debt
    assert_ledger_invariants(server.ledger)

    commit(server, live, 150)  # the hold that straddled the boundary charges the new period
    assert (budget(server)["spent"], budget(server)["reserved"]) == (150, 0)
    assert_ledger_invariants(server.ledger)


def test_a_reset_whose_record_was_lost_is_not_made_twice(
    planned: Callable[..., tuple[Flask, Rollovers]],
    server: LocalCyclesServer,
    clocks: Clocks,
    tmp_path: Path,
) -> None:
    """The reset was made but not recorded (a crash between the two), and the plan has
    changed since: the server refuses the key with another body, which counts as done."""
    app, rollover = planned(TENANT_PLANS="acme=daily")
    rollover()
    clocks.moment = datetime(2027, 3, 3, 1, tzinfo=UTC)
    assert rollover() == {"acme": "reset"}
    cost = spend(app, server)
    state = tmp_path / "rollover.json"
    state.write_text(state.read_text().replace("2027-03-03", "2027-03-02"))

    _, again = planned(BUDGET_PLANS="daily=0.75/day", TENANT_PLANS="acme=daily")
    assert again() == {"acme": "reset"}
    assert budget(server)["spent"] == cost  # not reset a second time
    assert again() == {"acme": "current"}
    assert len(rollover_keys(server)) == 1


def test_a_plan_without_a_period_never_resets(
    planned: Callable[..., tuple[Flask, Rollovers]], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = planned(TENANT_PLANS="acme=flat")
    cost = spend(app, server)
    for moment in (START, datetime(2028, 1, 1, tzinfo=UTC)):
        clocks.moment = moment
        assert rollover() == {"acme": "never"}
    assert budget(server)["spent"] == cost and rollover_keys(server) == []


def test_a_budget_the_server_refuses_is_reported_and_the_others_roll_over(
    planned: Callable[..., tuple[Flask, Rollovers]], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = planned(DEFAULT_PLAN="daily")
    rollover()
    spend(app, server, "globex")
    with server.ledger.db.write() as conn:  # acme's budget is gone from Cycles
        conn.execute("DELETE FROM budgets WHERE scope = ?", (budget_scope("acme"),))
    clocks.moment = datetime(2027, 3, 3, tzinfo=UTC)
    budgets = planned_budgets(app_settings(app))
    done = list(roll_over(rollover.admin, budgets, rollover.state, clocks.moment))
    assert [(d.budget.tenant, d.outcome) for d in done] == [("acme", "failed"), ("globex", "reset")]
    assert "BUDGET_NOT_FOUND" in done[0].error
    assert (
        done[0]
        .describe()
        .startswith(
            f"acme ({budget_scope('acme')}, plan daily): not rolled over to the day from "
            "2027-03-03T00:00:00Z (tried again on the next run): "
        )
    )
    assert budget(server, "globex")["spent"] == 0
    # Not recorded: the next run tries acme again (and leaves globex alone).
    assert rollover() == {"acme": "failed", "globex": "current"}
