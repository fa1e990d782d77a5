"""End-user budgets (END_USER_BUDGET_USD): the body's ``user`` names the caller's end user,
whose budget (``.../agent:<user>``, made on first use through the admin API) the call must
fit as well as the tenant's, in the same one reservation.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.budget import pricing
from localcycles import LocalCyclesServer

PROMPT = "Name three rivers of Europe."
ALLOCATION = 1_000_000  # END_USER_BUDGET_USD=0.01, in USD microcents
MAX_TOKENS = 20


@pytest.fixture
def end_user_app(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> Flask:
    return make_end_user_app(cycles_server, make_app)


def make_end_user_app(server: LocalCyclesServer, make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        server.base_url,
        END_USER_BUDGET_USD="0.01",
        CYCLES_ADMIN_URL=server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
    )


def user_scope(tenant: str, user: str) -> str:
    return f"{budget_scope(tenant)}/app:test-app/agent:{user}"


def chat(app: Flask, tenant: str, user: str | None, **extra: object) -> tuple[int, dict]:
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, **extra, **({"user": user} if user else {})}
    response = app.test_client().post("/chat", json=body, headers=auth_headers(tenant))
    return response.status_code, response.get_json()


def ledger_row(provisioner: Provisioner, scope: str) -> dict:
    found = provisioner.ledger.budget(scope, UNIT)
    assert found is not None, f"no budget at {scope}"
    return found


def test_the_first_call_makes_the_budget_and_both_budgets_are_charged(
    end_user_app: Flask, provisioner: Provisioner
) -> None:
    assert provisioner.ledger.budget(user_scope("acme", "bob"), UNIT) is None
    status, body = chat(end_user_app, "acme", "bob")
    assert status == 200, body
    bob = ledger_row(provisioner, user_scope("acme", "bob"))
    assert bob["allocated"] == ALLOCATION
    assert bob["spent"] == body["cost_usd_microcents"] == provisioner.balance("acme")["spent"]
    assert bob["reserved"] == 0


def test_a_plans_per_user_amount_funds_its_tenants_end_users(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        cycles_server.base_url,
        END_USER_BUDGET_USD="0.01",
        BUDGET_PLANS="pro=50/month/user=0.02",
        TENANT_PLANS="acme=pro",
        CYCLES_ADMIN_URL=cycles_server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
    )
    for tenant in ("acme", "globex"):
        status, body = chat(app, tenant, "bob")
        assert status == 200, body
    assert ledger_row(provisioner, user_scope("acme", "bob"))["allocated"] == 2 * ALLOCATION
    assert ledger_row(provisioner, user_scope("globex", "bob"))["allocated"] == ALLOCATION


def test_an_end_user_out_of_budget_is_refused_and_others_are_served(
    end_user_app: Flask, provisioner: Provisioner
) -> None:
    # An existing budget is used as it is (never funded again on first use).
    provisioner.ledger.set_budget(user_scope("acme", "bob"), UNIT, allocated=1)
    status, body = chat(end_user_app, "acme", "bob")
    assert status == 402, body
    assert ledger_row(provisioner, user_scope("acme", "bob"))["allocated"] == 1
    for user in ("carol", None):
        status, body = chat(end_user_app, "acme", user)
        assert status == 200, (user, body)
    carol = ledger_row(provisioner, user_scope("acme", "carol"))
    assert provisioner.balance("acme")["spent"] > carol["spent"] > 0


def test_the_tenant_budget_holds_when_every_end_user_has_room(
    end_user_app: Flask, provisioner: Provisioner
) -> None:
    # One microcent short of this call's reservation, whatever the bake's prices.
    provisioner.set_budget("acme", pricing.estimate(PROMPT, max_tokens=MAX_TOKENS) - 1)
    status, body = chat(end_user_app, "acme", "bob")
    assert status == 402, body
    bob = ledger_row(provisioner, user_scope("acme", "bob"))
    assert (bob["spent"], bob["reserved"]) == (0, 0)
    assert provisioner.balance("acme")["spent"] == 0


def test_concurrent_first_calls_fund_the_budget_once(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # Two apps (two workers: neither knows what the other made) and several threads each.
    apps = [make_end_user_app(cycles_server, make_app) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: chat(apps[i % 2], "acme", "dave"), range(8)))
    assert [status for status, _ in results] == [200] * 8, results
    dave = ledger_row(provisioner, user_scope("acme", "dave"))
    charged = sum(body["cost_usd_microcents"] for _, body in results)
    assert dave["allocated"] == ALLOCATION
    assert dave["spent"] == charged == provisioner.balance("acme")["spent"]


def test_budget_shows_one_end_user_to_its_own_tenant_only(
    end_user_app: Flask, provisioner: Provisioner
) -> None:
    status, body = chat(end_user_app, "acme", "bob")
    assert status == 200, body
    client = end_user_app.test_client()
    own = client.get("/budget?user=bob", headers=auth_headers("acme"))
    assert own.status_code == 200, own.get_json()
    (row,) = own.get_json()["balances"]
    assert row["scope"] == user_scope("acme", "bob")
    assert row["spent"] == body["cost_usd_microcents"]
    # globex's end user "bob" is another budget: acme's is neither shown nor spent by it.
    assert_error(client.get("/budget?user=bob", headers=auth_headers("globex")), 404, "not_found")
    status, _ = chat(end_user_app, "globex", "bob")
    assert status == 200
    assert ledger_row(provisioner, user_scope("acme", "bob"))["spent"] == row["spent"]
    assert_error(
        client.get("/budget?user=B%21", headers=auth_headers("acme")), 400, "invalid_request"
    )


@pytest.mark.parametrize("user", ["Bob", "bob smith", "b/x", "x" * 65, ""])
def test_an_invalid_end_user_is_a_400_before_any_budget(
    end_user_app: Flask, provisioner: Provisioner, user: str
) -> None:
    response = end_user_app.test_client().post(
        "/chat", json={"prompt": PROMPT, "user": user}, headers=auth_headers("acme")
    )
    body = assert_error(response, 400, "invalid_request")
    assert "user" in body["message"]
    assert provisioner.reservation_statuses("acme") == []


def test_without_end_user_budgets_a_named_user_is_a_400(
    app: Flask, provisioner: Provisioner
) -> None:
    response = app.test_client().post(
        "/chat", json={"prompt": PROMPT, "user": "bob"}, headers=auth_headers("acme")
    )
    body = assert_error(response, 400, "invalid_request")
    assert "END_USER_BUDGET_USD" in body["message"]
    assert provisioner.reservation_statuses("acme") == []


def test_the_api_document_offers_user_only_when_end_user_budgets_are_on(
    end_user_app: Flask, app: Flask
) -> None:
    def chat_fields(of: Flask) -> dict[str, Any]:
        document = of.test_client().get("/openapi.json").get_json()
        fields: dict[str, Any] = document["components"]["schemas"]["ChatRequest"]["properties"]
        return fields

    assert chat_fields(end_user_app)["user"]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    assert "user" not in chat_fields(app)
