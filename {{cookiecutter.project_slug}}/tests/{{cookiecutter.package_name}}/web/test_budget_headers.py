"""Every guarded answer carries the caller's budget in its headers, exact against the ledger.

The figures come from the answers the guard has anyway (the reservation's ``balances``,
the call's own charge), never from another Cycles call; these tests hold them to what the
embedded server's ledger says once the call is over.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import UNIT, Provisioner, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from {{ cookiecutter.package_name }}.money import usd_text
from {{ cookiecutter.package_name }}.web import budget_headers
from {{ cookiecutter.package_name }}.web.budget_headers import (
    LIMIT,
    REMAINING,
    REMAINING_MICROCENTS,
    RESET,
)
from localcycles import LocalCyclesServer, LocalLedger
from support.cycles_stub import CyclesStub, Responder, StubReply, StubRequest, forward_to

PROMPT = "Count the coins in the jar, please."
MAX_TOKENS = 32
BODY = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
ESTIMATE = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
PATIENCE_S = 30.0


def ledger_figures(provisioner: Provisioner, tenant: str = "acme") -> dict[str, Any]:
    return provisioner.balance(tenant)


def assert_budget_headers(headers: Any, remaining: int, allocated: int) -> None:
    """The three amount headers say exactly ``remaining`` of ``allocated``."""
    assert headers[REMAINING_MICROCENTS] == str(remaining)
    assert headers[REMAINING] == usd_text(remaining)
    assert headers[LIMIT] == usd_text(allocated)


@pytest.mark.parametrize("route", ["/chat", "/summarize"])
def test_a_json_answer_shows_what_remains_after_its_own_charge(
    client: FlaskClient, provisioner: Provisioner, route: str
) -> None:
    body = BODY if route == "/chat" else {"text": PROMPT}
    response = client.post(route, json=body, headers=auth_headers("acme"))
    assert response.status_code == 200
    ledger = ledger_figures(provisioner)
    assert ledger["spent"] == response.get_json()["cost_usd_microcents"] > 0
    # Nothing else is held: what remains is the allocation less what was spent.
    assert ledger["remaining"] == ledger["allocated"] - ledger["spent"]
    assert_budget_headers(response.headers, ledger["remaining"], ledger["allocated"])
    assert RESET not in response.headers  # no plan: the budget never resets


def test_each_tenant_sees_its_own_budget_only(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    provisioner.set_budget("globex", allocated=7 * 100_000_000)
    acme = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    globex = client.post("/chat", json=BODY, headers=auth_headers("globex"))
    for tenant, response in (("acme", acme), ("globex", globex)):
        ledger = ledger_figures(provisioner, tenant)
        assert_budget_headers(response.headers, ledger["remaining"], ledger["allocated"])
    assert globex.headers[LIMIT] == "7.00"


def test_a_budget_at_another_scope_of_the_call_is_never_shown(
    client: FlaskClient, provisioner: Provisioner, ledger: LocalLedger
) -> None:
    # The call also touches its app scope (tenant:.../app:test-app); a budget there is in
    # the reservation's answer too, and is not the caller's budget.
    ledger.set_budget(f"{budget_scope('acme')}/app:test-app", UNIT, allocated=10**9)
    response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
    own = ledger_figures(provisioner)
    assert_budget_headers(response.headers, own["remaining"], own["allocated"])


def test_a_stream_shows_its_hold_in_the_headers_and_what_remains_in_done(
    app: Flask, serve: Callable[[Flask], str], provisioner: Provisioner
) -> None:
    url = urlsplit(serve(app))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=PATIENCE_S)
    headers = {"Content-Type": "application/json", **auth_headers("acme")}
    connection.request("POST", "/chat", json.dumps({**BODY, "stream": True}), headers)
    response = connection.getresponse()
    assert response.status == 200
    text = response.read().decode()
    done = json.loads(text.rsplit("data: ", 1)[1])
    ledger = ledger_figures(provisioner)
    cost = done["cost_usd_microcents"]
    assert ledger["spent"] == cost
    # The headers went out under the hold: the estimate taken out, not yet the charge.
    before = ledger["allocated"] - ESTIMATE
    assert response.getheader(REMAINING_MICROCENTS) == str(before)
    assert response.getheader(REMAINING) == usd_text(before)
    assert response.getheader(LIMIT) == usd_text(ledger["allocated"])
    # The done event: what remains after the charge, as the ledger has it.
    assert done["remaining_microcents"] == ledger["remaining"] == ledger["allocated"] - cost
    assert done["remaining_usd"] == usd_text(ledger["remaining"])


def test_a_denial_shows_what_remains(client: FlaskClient, provisioner: Provisioner) -> None:
    provisioner.set_budget("acme", allocated=ESTIMATE - 1)
    for _ in range(2):  # Cycles' answer, then the deny cache's: the same headers
        denied = client.post("/chat", json=BODY, headers=auth_headers("acme"))
        assert_error(denied, 402, "budget_exceeded")
        assert_budget_headers(denied.headers, ESTIMATE - 1, ESTIMATE - 1)


def test_a_provider_failure_shows_the_budget_whole_again(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FakeProvider(fail_with="vendor down")
    response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 502, "provider_error")
    ledger = ledger_figures(provisioner)
    assert (ledger["spent"], ledger["reserved"]) == (0, 0)
    assert_budget_headers(response.headers, ledger["allocated"], ledger["allocated"])


def test_shadow_mode_shows_the_dry_runs_figures_less_the_recorded_cost(
    provisioner: Provisioner, make_app: Callable[..., Flask], cycles_server: LocalCyclesServer
) -> None:
    app = make_app(cycles_server.base_url, CYCLES_MODE="shadow")
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
    ledger = ledger_figures(provisioner)
    assert ledger["spent"] == response.get_json()["cost_usd_microcents"] > 0
    assert_budget_headers(response.headers, ledger["remaining"], ledger["allocated"])


def test_no_headers_before_a_reservation(client: FlaskClient) -> None:
    refused = client.post("/chat", json={"prompt": ""}, headers=auth_headers("acme"))
    assert refused.status_code == 400
    assert not set(budget_headers.HEADERS) & set(refused.headers.keys())


def test_the_reset_is_the_plans_next_period_boundary(
    provisioner: Provisioner, make_app: Callable[..., Flask], cycles_server: LocalCyclesServer
) -> None:
    app = make_app(cycles_server.base_url, BUDGET_PLANS="pro=100/month", TENANT_PLANS="acme=pro")
    app.extensions[CLOCK] = lambda: datetime(2027, 2, 14, 9, 30, tzinfo=UTC)
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
    assert response.headers[RESET] == "2027-03-01T00:00:00Z"


def test_no_figures_when_the_reservation_names_no_budget_of_the_callers(
    recorder: CyclesStub,
    cycles_stub: Callable[[Responder], CyclesStub],
    make_app: Callable[..., Flask],
) -> None:
    forward = forward_to(recorder.base_url)

    def without_balances(request: StubRequest) -> StubReply:
        reply = forward(request)
        if request.path == "/v1/reservations" and isinstance(reply.body, dict):
            body = {key: value for key, value in reply.body.items() if key != "balances"}
            reply = StubReply(reply.status, body)
        return reply

    app = make_app(cycles_stub(without_balances).base_url)
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
    assert not set(budget_headers.HEADERS) & set(response.headers.keys())
