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
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from flask import Flask

from conftest import TENANTS, UNIT, Provisioner, auth_headers, budget_scope, cycles_key
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.plans import planned_budgets
from {{ cookiecutter.package_name }}.budget.rollover import end_user_of, roll_over, rollover_key
from {{ cookiecutter.package_name }}.budget.rollover_state import RolloverState
from {{ cookiecutter.package_name }}.config import app_settings
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from {{ cookiecutter.package_name }}.cycles.clients import cycles_clients
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from localcycles import LocalCyclesServer
from localcycles.ledger.local_ledger import MAX_REPLAY_WINDOW_DAYS
from support.cycles_stub import CyclesStub, Responder, StubReply, StubRequest, forward_to
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
    # The tests move this clock months ahead and then count every reset's idempotency key:
    # the ledger's background prune (run whenever its checkpointer wakes) would forget keys
    # past the 7-day replay window at a moment no test controls.
    running.ledger.replay_window_days = MAX_REPLAY_WINDOW_DAYS
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
        """Each tenant's own budget's outcome (end users: :meth:`everyone`)."""
        return {who: outcome for who, outcome in self.everyone().items() if "/" not in who}

    def everyone(self) -> dict[str, str]:
        """Every line's outcome: ``acme``, ``acme/*`` (all its end users), ``acme/bob``."""
        budgets = planned_budgets(app_settings(self.app))
        now = self.app.extensions[CLOCK]()
        return {
            "/".join(filter(None, (done.budget.tenant, done.end_user))): done.outcome
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


# --- end users' budgets ---------------------------------------------------------------

PROMPT = "Name three rivers of Europe."
MAX_TOKENS = 20
APRIL = datetime(2027, 4, 1, tzinfo=UTC)


def estimate() -> int:
    """One call's hold, whatever the bake's prices: an end user's allowance in these tests."""
    return pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)


def usd(microcents: int) -> str:
    return f"{microcents / 100_000_000:.8f}"


@pytest.fixture
def per_user(
    planned: Callable[..., tuple[Flask, Rollovers]], server: LocalCyclesServer
) -> tuple[Flask, Rollovers]:
    """acme on a monthly plan: room for two calls, each end user for one (a month)."""
    return planned(
        BUDGET_PLANS=f"monthly={usd(2 * estimate())}/month/user={usd(estimate())}",
        TENANT_PLANS="acme=monthly",
        END_USER_BUDGET_USD="0.01",
        CYCLES_ADMIN_URL=server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
        CYCLES_DENY_CACHE_MS="0",  # a denial is asked again at once, not answered from memory
    )


def chat(app: Flask, user: str, tenant: str = "acme") -> tuple[int, dict[str, Any]]:
    """A /chat call of ``tenant``'s end user ``user``, through the guard."""
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "user": user}
    response = app.test_client().post("/chat", json=body, headers=auth_headers(tenant))
    return response.status_code, response.get_json()


def user_scope(user: str, tenant: str = "acme") -> str:
    return f"{budget_scope(tenant)}/app:test-app/agent:{user}"


def served(app: Flask, user: str) -> int:
    status, body = chat(app, user)
    assert status == 200, body
    cost: int = body["cost_usd_microcents"]
    return cost


def test_an_end_user_out_of_allowance_is_served_again_the_next_month(
    per_user: tuple[Flask, Rollovers], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = per_user
    assert rollover.everyone() == {"acme": "tracked", "acme/*": "tracked"}
    march = served(app, "bob")
    status, body = chat(app, "bob")
    assert status == 402, body  # bob's month is spent; acme's budget still has room
    assert budget(server)["remaining"] >= estimate()

    clocks.moment = APRIL
    assert rollover.everyone() == {"acme": "reset", "acme/bob": "reset"}
    bob = server.ledger.budget(user_scope("bob"), UNIT)
    assert bob is not None
    assert (bob["spent"], bob["allocated"], bob["remaining"]) == (0, estimate(), estimate())
    assert march > 0 and budget(server)["spent"] == 0
    # Every later run of the month: no reset, no call.
    for minutes in (1, 60 * 24 * 29):
        clocks.moment = APRIL + timedelta(minutes=minutes)
        assert rollover.everyone() == {"acme": "current", "acme/*": "current"}
    assert rollover_keys(server) == sorted(
        [rollover_key(budget_scope("acme"), APRIL), rollover_key(user_scope("bob"), APRIL)]
    )

    april = served(app, "bob")  # served again
    carol = served(app, "carol")
    # dave has his whole allowance, acme less than one call: the tenant's cap holds.
    status, body = chat(app, "dave")
    assert status == 402, body
    assert budget(server)["spent"] == april + carol
    for user, spent in (("bob", april), ("carol", carol), ("dave", 0)):
        row = server.ledger.budget(user_scope(user), UNIT)
        assert row is not None and (row["spent"], row["reserved"]) == (spent, 0), user
    assert_ledger_invariants(server.ledger)


def test_an_end_users_missed_periods_roll_over_once(
    per_user: tuple[Flask, Rollovers], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = per_user
    rollover()
    served(app, "bob")
    clocks.moment = datetime(2027, 7, 15, 8, tzinfo=UTC)  # down for four month boundaries
    assert rollover.everyone() == {"acme": "reset", "acme/bob": "reset"}
    july = datetime(2027, 7, 1, tzinfo=UTC)
    assert rollover_keys(server) == sorted(
        rollover_key(scope, july) for scope in (budget_scope("acme"), user_scope("bob"))
    )
    cost = served(app, "bob")
    assert rollover.everyone() == {"acme": "current", "acme/*": "current"}
    bob = server.ledger.budget(user_scope("bob"), UNIT)
    assert bob is not None and bob["spent"] == cost
    assert_ledger_invariants(server.ledger)


def test_an_end_user_made_since_the_last_listing_resets_if_it_lived_before_the_boundary(
    per_user: tuple[Flask, Rollovers],
    server: LocalCyclesServer,
    clocks: Clocks,
    tmp_path: Path,
) -> None:
    app, rollover = per_user
    rollover()  # the end users as a whole are tracked; none is listed yet
    served(app, "bob")  # made in March
    clocks.moment = APRIL + timedelta(seconds=30)
    carol = served(app, "carol")  # made in April, before the run that catches up
    assert rollover.everyone() == {"acme": "reset", "acme/bob": "reset", "acme/carol": "tracked"}
    row = server.ledger.budget(user_scope("carol"), UNIT)
    assert row is not None and row["spent"] == carol  # April's spend is April's

    # The record lost: everything is tracked afresh, nothing reset (spend is never
    # forgiven twice in a month), and the next boundary resets everyone once.
    (tmp_path / "rollover.json").unlink()
    clocks.moment = APRIL + timedelta(days=3)
    bob = served(app, "bob")
    assert rollover.everyone() == {"acme": "tracked", "acme/*": "tracked"}
    row = server.ledger.budget(user_scope("bob"), UNIT)
    assert row is not None and row["spent"] == bob
    clocks.moment = datetime(2027, 5, 1, tzinfo=UTC)
    assert rollover.everyone() == {"acme": "reset", "acme/bob": "reset", "acme/carol": "reset"}
    assert len(rollover_keys(server)) == 2 + 3
    assert_ledger_invariants(server.ledger)


def test_end_users_not_listed_are_tried_again_and_frozen_ones_left_alone(
    per_user: tuple[Flask, Rollovers], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = per_user
    rollover()
    served(app, "bob")
    served(app, "carol")
    server.ledger.set_budget_status(user_scope("carol"), "FROZEN")
    clocks.moment = APRIL
    refused = Endpoint(server.base_url, {"X-Admin-API-Key": "not-the-admin-key"})
    done = list(roll_over(refused, planned_budgets(app_settings(app)), rollover.state, APRIL))
    assert [(d.end_user, d.outcome) for d in done] == [("", "failed"), ("*", "failed")]
    line = done[1].describe()
    assert line.startswith(
        f"acme's end users ({budget_scope('acme')}/agent:*, plan monthly): not rolled over "
        "to the month from 2027-04-01T00:00:00Z (tried again on the next run): "
    )
    # The next run lists them; a frozen budget is left alone and stops no one else's.
    assert rollover.everyone() == {"acme": "reset", "acme/bob": "reset", "acme/carol": "inactive"}
    assert rollover.everyone() == {"acme": "current", "acme/*": "current"}
    frozen = server.ledger.budget(user_scope("carol"), UNIT)
    assert frozen is not None and frozen["spent"] > 0


def test_an_end_user_whose_reset_fails_is_tried_again_and_no_other_twice(
    per_user: tuple[Flask, Rollovers],
    server: LocalCyclesServer,
    clocks: Clocks,
    cycles_stub: Callable[[Responder], CyclesStub],
) -> None:
    app, rollover = per_user
    rollover()
    served(app, "bob")
    served(app, "carol")
    forward = forward_to(server.base_url)

    def bobs_fund_fails(request: StubRequest) -> StubReply:
        query = parse_qs(urlsplit(request.path).query)
        if query.get("scope") == [user_scope("bob")]:
            return StubReply(503, {"error": "INTERNAL_ERROR", "message": "down a moment"})
        return forward(request)

    flaky = cycles_stub(bobs_fund_fails)
    clocks.moment = APRIL
    admin = Endpoint(flaky.base_url, {"X-Admin-API-Key": ADMIN_KEY})
    done = roll_over(admin, planned_budgets(app_settings(app)), rollover.state, APRIL)
    assert [(d.end_user, d.outcome) for d in done] == [
        ("", "reset"),
        ("bob", "failed"),
        ("carol", "reset"),
    ]
    # The next run lists again: bob is reset, carol (recorded) is not touched again.
    assert rollover.everyone() == {"acme": "current", "acme/bob": "reset", "acme/carol": "current"}
    assert rollover.everyone() == {"acme": "current", "acme/*": "current"}
    assert rollover_keys(server) == sorted(
        rollover_key(scope, APRIL)
        for scope in (budget_scope("acme"), user_scope("bob"), user_scope("carol"))
    )
    for user in ("bob", "carol"):
        row = server.ledger.budget(user_scope(user), UNIT)
        assert row is not None and row["spent"] == 0, user


def test_every_end_user_rolls_over_however_many_pages_they_fill(
    per_user: tuple[Flask, Rollovers], server: LocalCyclesServer, clocks: Clocks
) -> None:
    app, rollover = per_user
    rollover()
    users = [f"user-{n:03d}" for n in range(130)]  # more than one page (100) and one batch
    for user in users:
        server.ledger.set_budget(user_scope(user), UNIT, allocated=estimate())
    cost = served(app, "user-129")  # on the second page
    row = server.ledger.budget(user_scope("user-129"), UNIT)
    assert row is not None and row["spent"] == cost
    clocks.moment = APRIL
    done = rollover.everyone()
    assert done == {"acme": "reset", **{f"acme/{user}": "reset" for user in users}}
    assert sorted(rollover_keys(server)) == sorted(
        [rollover_key(budget_scope("acme"), APRIL)]
        + [rollover_key(user_scope(user), APRIL) for user in users]
    )
    row = server.ledger.budget(user_scope("user-129"), UNIT)
    assert row is not None and row["spent"] == 0
    assert rollover.everyone() == {"acme": "current", "acme/*": "current"}
    assert_ledger_invariants(server.ledger)


@pytest.mark.parametrize(
    ("scope", "user"),
    [
        ("tenant:acme/app:test-app/agent:bob", "bob"),
        ("tenant:acme/app:test-app/workflow:m/agent:bob", "bob"),  # one per model
        ("tenant:acme", ""),  # the tenant's own
        ("tenant:acme/app:test-app/workflow:m", ""),  # a model's
        ("tenant:acme2/app:test-app/agent:bob", ""),  # another tenant's, sharing the prefix
    ],
)
def test_an_end_users_budget_is_the_deepest_agent_level_below_its_tenants(
    scope: str, user: str
) -> None:
    assert end_user_of({"scope": scope}, "tenant:acme") == user
