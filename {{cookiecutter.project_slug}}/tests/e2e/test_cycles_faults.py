"""Cycles answers that drip, stall, overflow or get lost: every call ends within its deadline,
nothing is charged for a provider call never made, and no hold outlives a lost answer.

The app talks to the embedded Cycles server through a fault-injecting proxy
(tests/support/fault_proxy.py) over real sockets. Deadlines are proved by the order of
events, not by timing: the proxy records that the app hung up before the answer was out.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from conftest import (
    CountingProvider,
    CyclesStub,
    Provisioner,
    Responder,
    StubReply,
    StubRequest,
    assert_error,
    auth_headers,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.service import budget_service
from localcycles import LocalCyclesServer
from support.fault_proxy import Cut, Delay, Drip, Drop, Fault, FaultProxy, Garble, Gateway, Huge

PROMPT = "Count the cost of a lost answer."
MAX_TOKENS = 16
BODY = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
RESERVE = "POST /v1/reservations"
# Short Cycles timeouts, so each call's deadline (connect + read + 5 s) comes soon.
TIMEOUTS = {"CYCLES_CONNECT_TIMEOUT": "0.2", "CYCLES_READ_TIMEOUT": "0.5"}
# A drip whose every byte arrives well inside the read timeout: only a deadline ends it.
SLOW_DRIP_S = 0.05


@pytest.fixture
def faulty_app(
    fault_proxy: FaultProxy, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> Flask:
    """The app, talking to Cycles through ``fault_proxy``, with a provider that counts."""
    app = make_app(fault_proxy.base_url, CYCLES_DENY_CACHE_MS="0", **TIMEOUTS)
    app.extensions["llm"] = CountingProvider(model="fake-model")
    return app


def settle_lost_holds(app: Flask) -> None:
    """Let the app find and release the holds whose reserve answer was lost."""
    assert budget_service(app).lost_reserves.drain(timeout_s=30)


def held(provisioner: Provisioner) -> list[str]:
    return [s for s in provisioner.reservation_statuses("acme") if s == "ACTIVE"]


# --- point 3: a deadline on every call, and no charge for a call never made ----------------


@pytest.mark.parametrize("headers", [False, True], ids=["dripped-body", "dripped-head"])
def test_a_dripping_reserve_answer_ends_at_its_deadline_in_503_and_charges_nothing(
    faulty_app: Flask, fault_proxy: FaultProxy, provisioner: Provisioner, headers: bool
) -> None:
    fault_proxy.on(RESERVE, Drip(every_s=SLOW_DRIP_S, headers=headers), times=1)
    response = faulty_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))

    assert_error(response, 503, "cycles_unavailable")
    [dripped, *_] = fault_proxy.wait_done(RESERVE)
    assert dripped.app_hung_up and dripped.sent < dripped.answer_size  # cut off mid-answer
    assert faulty_app.extensions["llm"].calls == 0  # the provider was never asked
    settle_lost_holds(faulty_app)
    assert provisioner.balance("acme")["spent"] == 0
    assert provisioner.balance("acme")["reserved"] == 0
    assert held(provisioner) == []


def test_a_huge_reserve_answer_is_abandoned_and_its_hold_released(
    faulty_app: Flask, fault_proxy: FaultProxy, provisioner: Provisioner
) -> None:
    fault_proxy.on(RESERVE, Huge(500 * 1024 * 1024), times=1)
    response = faulty_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))

    assert_error(response, 503, "cycles_unavailable")
    [huge, *_] = fault_proxy.wait_done(RESERVE)
    assert huge.app_hung_up and huge.sent < 64 * 1024 * 1024
    settle_lost_holds(faulty_app)
    assert (provisioner.balance("acme")["spent"], held(provisioner)) == (0, [])


def test_a_dripping_commit_answer_ends_at_its_deadline(
    faulty_app: Flask, fault_proxy: FaultProxy
) -> None:
    fault_proxy.on("POST /v1/reservations/*/commit", Drip(every_s=SLOW_DRIP_S), times=1)
    response = faulty_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))

    # The call was made under a live hold: it is served, and its charge settles later.
    assert response.status_code == 200, response.get_json()
    [commit, *_] = fault_proxy.wait_done("POST /v1/reservations/{id}/commit")
    assert commit.app_hung_up and commit.sent < commit.answer_size


def test_a_hold_too_short_to_use_is_released_and_the_provider_never_asked(
    cycles_stub: Callable[[Responder], CyclesStub],
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
) -> None:
    forward = forward_to(cycles_server.base_url)

    def shortened(request: StubRequest) -> StubReply:
        reply = forward(request)
        if request.path == "/v1/reservations" and request.method == "POST":
            reply.body["remaining_ttl_ms"] = 1_000  # a server that cut the TTL to 1 s
        return reply

    app = make_app(cycles_stub(shortened).base_url)
    app.extensions["llm"] = provider = CountingProvider(model="fake-model")
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))

    assert_error(response, 503, "cycles_unavailable")
    assert provider.calls == 0
    settle_lost_holds(app)
    assert provisioner.reservation_statuses("acme") == ["RELEASED"]
    assert provisioner.balance("acme")["spent"] == 0


# --- point 4: a lost reserve answer leaves no hold -----------------------------------------

LOST_ANSWERS: dict[str, Fault] = {
    "garbled": Garble(),
    "lost": Drop(),
    "half-sent": Cut(after_bytes=-10),
    "late": Delay(seconds=1.5),  # past the 0.5 s read timeout
    "gateway-timeout": Gateway(504),  # a 5xx that is not Cycles' own error body
}


@pytest.mark.parametrize("fault", LOST_ANSWERS.values(), ids=LOST_ANSWERS.keys())
def test_a_reserve_whose_answer_was_lost_leaves_no_hold(
    faulty_app: Flask, fault_proxy: FaultProxy, provisioner: Provisioner, fault: Fault
) -> None:
    fault_proxy.on(RESERVE, fault, times=1)
    # The app's first call: a new connection, so the transport does not send it again.
    response = faulty_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))

    assert_error(response, 503, "cycles_unavailable")
    [lost, *_] = fault_proxy.wait_done(RESERVE)
    assert lost.upstream_status == 200  # Cycles made the reservation; its answer was lost
    settle_lost_holds(faulty_app)
    assert provisioner.reservation_statuses("acme") == ["RELEASED"]
    assert provisioner.balance("acme")["reserved"] == 0


def test_a_budget_for_n_calls_serves_exactly_n_however_many_reserve_answers_are_lost(
    faulty_app: Flask, fault_proxy: FaultProxy, provisioner: Provisioner
) -> None:
    provider = faulty_app.extensions["llm"]
    usage = provider.complete(prompt=PROMPT, max_tokens=MAX_TOKENS)
    provider.calls = 0
    cost = pricing.cost(usage.input_tokens, usage.output_tokens)
    reserve = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    if cost == 0:
        pytest.skip("the prompted prices are zero: calls cost nothing")
    provisioner.set_budget("acme", allocated=reserve + 2 * cost)  # exactly 3 calls fit
    client = faulty_app.test_client()

    def chat() -> int:
        return client.post("/chat", json=BODY, headers=auth_headers("acme")).status_code

    served = 0
    for fault in [*LOST_ANSWERS.values(), *LOST_ANSWERS.values()]:
        fault_proxy.on(RESERVE, fault, times=1)
        # 503; or served when the transport's one resend on a kept-alive connection got the
        # answer after all; or refused while lost holds still block the budget.
        for status in (chat(), chat()):
            assert status in (200, 402, 503)
            served += status == 200
    assert served <= 3
    # Once the lost holds are released, the budget serves what is left of it, and no more.
    settle_lost_holds(faulty_app)
    while chat() == 200:
        served += 1
    assert served == 3 == provider.calls
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (3 * cost, 0)
    assert held(provisioner) == []


def test_a_reserve_that_never_reached_cycles_leaves_nothing_to_recover(
    faulty_app: Flask, cycles_server: LocalCyclesServer, fault_proxy: FaultProxy
) -> None:
    fault_proxy.stop()  # nothing listens where the app looks for Cycles
    response = faulty_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_unavailable")
    assert budget_service(faulty_app).lost_reserves.pending() == 0  # no replays to a dead host
