"""GET /budget as people read it: dollars beside microcents, and the budget's period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.cycles.clients import Balance as CyclesBalance
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from {{ cookiecutter.package_name }}.web.budget_view import iso, readable
from localcycles import LocalCyclesServer

PLANS = {"BUDGET_PLANS": "daily=1/day,weekly=2/week,monthly=3/month,flat=4/none"}
# A Sunday in February, late in the UTC day.
NOW = datetime(2027, 2, 14, 23, 59, 59, tzinfo=UTC)


def budget_at(
    make_app: Callable[..., Flask], server: LocalCyclesServer, plan: str | None, now: datetime
) -> dict[str, object]:
    env = {**PLANS, "TENANT_PLANS": f"acme={plan}"} if plan else {}
    app = make_app(server.base_url, **env)
    app.extensions[CLOCK] = lambda: now
    response = app.test_client().get("/budget", headers=auth_headers("acme"))
    assert response.status_code == 200
    body: dict[str, object] = response.get_json()
    return body


@pytest.mark.parametrize(
    ("plan", "period", "start", "end"),
    [
        ("daily", "day", "2027-02-14T00:00:00Z", "2027-02-15T00:00:00Z"),
        ("weekly", "week", "2027-02-08T00:00:00Z", "2027-02-15T00:00:00Z"),
        ("monthly", "month", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"),
    ],
)
def test_the_period_is_the_plans_on_the_apps_clock(
    make_app: Callable[..., Flask],
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    plan: str,
    period: str,
    start: str,
    end: str,
) -> None:
    body = budget_at(make_app, cycles_server, plan, NOW)
    shown = {k: body[k] for k in ("period", "period_start", "period_end", "next_reset")}
    assert shown == {
        "period": period,
        "period_start": start,
        "period_end": end,
        "next_reset": end,
    }


def test_a_period_boundary_moves_the_period(
    make_app: Callable[..., Flask], cycles_server: LocalCyclesServer, provisioner: Provisioner
) -> None:
    after = budget_at(make_app, cycles_server, "daily", NOW + timedelta(seconds=1))
    assert (after["period_start"], after["next_reset"]) == (
        "2027-02-15T00:00:00Z",
        "2027-02-16T00:00:00Z",
    )


@pytest.mark.parametrize("plan", [None, "flat"])
def test_without_a_period_the_fields_are_null(
    make_app: Callable[..., Flask],
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    plan: str | None,
) -> None:
    body = budget_at(make_app, cycles_server, plan, NOW)
    assert body["period"] == "none"
    assert body["period_start"] is body["period_end"] is body["next_reset"] is None


def test_every_amount_is_shown_in_dollars_beside_its_microcents(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    provisioner.set_budget("acme", allocated=123_456_789)
    client.post("/chat", json={"prompt": "Hi.", "max_tokens": 8}, headers=auth_headers("acme"))
    body = client.get("/budget", headers=auth_headers("acme")).get_json()
    ledger = provisioner.balance("acme")
    (row,) = body["balances"]
    assert row["scope"] == budget_scope("acme")
    assert row["allocated_usd"] == "1.23456789"
    for name in ("allocated", "spent", "reserved", "remaining", "debt"):
        assert row[name] == ledger[name]
    assert row["spent"] > 0
    assert row["remaining_usd"] == readable(balance(remaining=row["remaining"])).remaining_usd
    assert (body["tenant"], body["unit"]) == ("acme", "USD_MICROCENTS")  # as before


def balance(**amounts: int) -> CyclesBalance:
    zero = dict.fromkeys(("allocated", "spent", "reserved", "remaining", "debt"), 0)
    return CyclesBalance(scope="tenant:acme", **{**zero, **amounts})


def test_readable_dollars_are_exact_strings() -> None:
    shown = readable(balance(allocated=500_000_000, spent=1_234_500, remaining=-50_000_000))
    assert (shown.allocated_usd, shown.spent_usd, shown.remaining_usd, shown.debt_usd) == (
        "5.00",
        "0.012345",
        "-0.50",
        "0.00",
    )


def test_instants_are_written_in_utc_with_a_z() -> None:
    moment = datetime(2027, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert iso(moment) == "2027-03-01T00:00:00Z"
