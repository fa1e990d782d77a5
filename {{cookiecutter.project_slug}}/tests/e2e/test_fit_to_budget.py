"""Fit-to-budget (FIT_TO_BUDGET_MIN_TOKENS): a call whose worst case does not fit is served
with the max_tokens what remains buys, if that is at least the floor; below it, a 402.
On the exact boundary, for JSON and streams; the reservation stays the charge's bound.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.config import app_settings
from localcycles import LocalCyclesServer
from support.fault_proxy import FaultProxy

PROMPT = "Name three rivers of Europe, and say which is the longest."
ASKED = 200
FLOOR = 8
FITTED = "X-Budget-Fitted-Max-Tokens"


@pytest.fixture
def fit_app(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> Flask:
    return make_app(cycles_server.base_url, FIT_TO_BUDGET_MIN_TOKENS=str(FLOOR))


def worst_case(app: Flask, max_tokens: int) -> int:
    prices = app_settings(app).llm_prices
    return pricing.estimate(PROMPT, max_tokens=max_tokens, prices=prices)


def done_event(text: str) -> dict[str, Any]:
    """The data of the ``done`` event of a server-sent event stream."""
    blocks = [block.splitlines() for block in text.split("\n\n") if block.strip()]
    for lines in blocks:
        if "event: done" in lines:
            data = "".join(line[len("data: ") :] for line in lines if line.startswith("data: "))
            found: dict[str, Any] = json.loads(data)
            return found
    raise AssertionError(f"no done event in {text!r}")


@pytest.mark.parametrize("stream", [False, True])
def test_what_remains_at_the_floor_is_served_with_the_floor(
    fit_app: Flask, provisioner: Provisioner, stream: bool
) -> None:
    allocation = worst_case(fit_app, FLOOR)  # exactly what FLOOR output tokens cost at most
    provisioner.set_budget("acme", allocation)
    response = fit_app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": ASKED, "stream": stream},
        headers=auth_headers("acme"),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = done_event(response.get_data(as_text=True)) if stream else response.get_json()
    assert (body["max_tokens"], body["requested_max_tokens"]) == (FLOOR, ASKED)
    assert response.headers[FITTED] == str(FLOOR)
    ledger = provisioner.balance("acme")
    assert ledger["spent"] == body["cost_usd_microcents"] <= allocation
    assert ledger["reserved"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_one_microcent_less_is_a_402(
    fit_app: Flask, provisioner: Provisioner, stream: bool
) -> None:
    provisioner.set_budget("acme", worst_case(fit_app, FLOOR) - 1)
    response = fit_app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": ASKED, "stream": stream},
        headers=auth_headers("acme"),
    )
    assert_error(response, 402, "budget_exceeded")
    assert FITTED not in response.headers
    assert provisioner.balance("acme")["spent"] == 0


def test_more_than_the_floor_buys_as_many_tokens_as_it_can(
    fit_app: Flask, provisioner: Provisioner
) -> None:
    allocation = worst_case(fit_app, 50) + 1
    provisioner.set_budget("acme", allocation)
    response = fit_app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": ASKED}, headers=auth_headers("acme")
    )
    assert response.status_code == 200, response.get_json()
    bought = response.get_json()["max_tokens"]
    assert worst_case(fit_app, bought) <= allocation < worst_case(fit_app, bought + 1)
    assert bought >= 50


def test_off_by_default(app: Flask, provisioner: Provisioner) -> None:
    provisioner.set_budget("acme", worst_case(app, ASKED) - 1)
    response = app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": ASKED}, headers=auth_headers("acme")
    )
    assert_error(response, 402, "budget_exceeded")


def test_a_call_that_fits_is_not_fitted(fit_app: Flask, provisioner: Provisioner) -> None:
    response = fit_app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": ASKED}, headers=auth_headers("acme")
    )
    assert response.status_code == 200
    assert "requested_max_tokens" not in response.get_json() and FITTED not in response.headers


def test_the_tightest_budget_on_the_calls_path_is_what_remains(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # The tenant has $100; its end user bob has exactly the floor's worst case left.
    app = make_app(
        cycles_server.base_url,
        FIT_TO_BUDGET_MIN_TOKENS=str(FLOOR),
        END_USER_BUDGET_USD="1",
        CYCLES_ADMIN_URL=cycles_server.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
    )
    bob = f"{budget_scope('acme')}/app:test-app/agent:bob"
    provisioner.ledger.set_budget(bob, UNIT, allocated=worst_case(app, FLOOR))
    response = app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": ASKED, "user": "bob"},
        headers=auth_headers("acme"),
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["max_tokens"] == FLOOR
    spent = provisioner.ledger.budget(bob, UNIT)
    assert spent is not None and spent["spent"] == provisioner.balance("acme")["spent"] > 0


def test_a_fitted_call_reads_the_balances_once(
    fault_proxy: FaultProxy, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    """The denial's explanation and the fit share one GET /v1/balances, whether the call
    is then served or refused."""
    app = make_app(
        fault_proxy.base_url, FIT_TO_BUDGET_MIN_TOKENS=str(FLOOR), CYCLES_DENY_CACHE_MS="0"
    )
    client = app.test_client()
    body = {"prompt": PROMPT, "max_tokens": ASKED}
    provisioner.set_budget("acme", worst_case(app, FLOOR))
    assert client.post("/chat", json=body, headers=auth_headers("acme")).status_code == 200
    assert len(fault_proxy.of("GET /v1/balances")) == 1
    provisioner.set_budget("acme", worst_case(app, FLOOR) - 1)
    refused = client.post("/chat", json=body, headers=auth_headers("acme"))
    assert assert_error(refused, 402, "budget_exceeded")["remaining_microcents"] >= 0
    assert len(fault_proxy.of("GET /v1/balances")) == 2
