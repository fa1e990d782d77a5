"""/budget and /readyz when Cycles answers 200 with a body that is not a balance list: the
budget service is not answering properly, so both answer 503 (never an empty list, never
"ready"), and CYCLES_FAIL_OPEN counts it as no answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, auth_headers
from localcycles import LocalCyclesServer
from support.cycles_stub import CyclesStub, Responder, StubReply, StubRequest, forward_to
from support.fault_proxy import FaultProxy, Garble

BALANCES = "GET /v1/balances"
NOT_PROPERLY = "not answering properly"


def balances_answer(cycles_server: LocalCyclesServer, body: Any) -> Responder:
    """Pass everything on to the real server, but answer every balance read with a 200
    carrying ``body``."""
    forward = forward_to(cycles_server.base_url)

    def respond(request: StubRequest) -> StubReply:
        if request.path.split("?")[0] == "/v1/balances":
            return StubReply(200, body)
        return forward(request)

    return respond


def assert_not_answering_properly(client: FlaskClient) -> None:
    budget = client.get("/budget", headers=auth_headers("acme"))
    assert NOT_PROPERLY in assert_error(budget, 503, "cycles_unavailable")["message"]
    assert NOT_PROPERLY in assert_error(client.get("/readyz"), 503, "not_ready")["message"]


def test_a_garbled_balance_answer_is_a_503_for_budget_and_readyz(
    fault_proxy: FaultProxy, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    client = make_app(fault_proxy.base_url).test_client()
    assert client.get("/budget", headers=auth_headers("acme")).status_code == 200
    assert client.get("/readyz").status_code == 200
    fault_proxy.on(BALANCES, Garble())
    assert_not_answering_properly(client)
    assert {e.fault for e in fault_proxy.of(BALANCES)[2:]} == {"Garble"}


ROW = {
    "scope": "tenant:acme",
    "scope_path": "tenant:acme",
    "remaining": {"unit": "USD_MICROCENTS", "amount": 5},
}
WRONG_SHAPES: dict[str, Any] = {
    "a list": [],
    "balances not a list": {"balances": "x"},
    "no balances": {"data": []},
    "a row not an object": {"balances": [1]},
    "a row without remaining": {"balances": [{"scope": "tenant:acme"}]},
    "a row without a scope": {"balances": [{"remaining": ROW["remaining"]}]},
    "an amount that is not a number": {
        "balances": [{**ROW, "spent": {"unit": "USD_MICROCENTS", "amount": "7"}}]
    },
    "an amount that is not an object": {"balances": [{**ROW, "remaining": 5}]},
    "a fractional amount": {
        "balances": [{**ROW, "reserved": {"unit": "USD_MICROCENTS", "amount": 1.5}}]
    },
}


@pytest.mark.parametrize("body", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_a_balance_answer_of_the_wrong_shape_is_a_503(
    body: Any,
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
    make_app: Callable[..., Flask],
) -> None:
    stub = cycles_stub(balances_answer(cycles_server, body))
    client = make_app(stub.base_url).test_client()
    assert_not_answering_properly(client)


def test_fail_open_counts_a_malformed_answer_as_no_answer(
    fault_proxy: FaultProxy, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    client = make_app(fault_proxy.base_url, CYCLES_FAIL_OPEN="true").test_client()
    fault_proxy.on(BALANCES, Garble())
    assert client.get("/readyz").get_json() == {"status": "degraded"}


def test_unknown_fields_and_absent_optional_amounts_are_still_read(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
    make_app: Callable[..., Flask],
) -> None:
    body = {"balances": [{**ROW, "new_field": True}], "has_more": False}
    stub = cycles_stub(balances_answer(cycles_server, body))
    client = make_app(stub.base_url).test_client()
    answer = client.get("/budget", headers=auth_headers("acme"))
    assert answer.status_code == 200
    balance = {"scope": "tenant:acme", "remaining": 5, "allocated": 0, "spent": 0}
    in_usd = {"remaining_usd": "0.00000005", "allocated_usd": "0.00", "spent_usd": "0.00"}
    zeros = {"reserved": 0, "debt": 0, "reserved_usd": "0.00", "debt_usd": "0.00"}
    assert answer.get_json()["balances"] == [{**balance, **in_usd, **zeros}]
    assert client.get("/readyz").get_json() == {"status": "ready"}
