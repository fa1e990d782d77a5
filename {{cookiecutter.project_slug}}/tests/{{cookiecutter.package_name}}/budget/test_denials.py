"""A 402 names the estimate that did not fit, what remains, and how to get more.

Cycles' denial carries no balances; the app reads them once per denial it asks Cycles
about, and the deny cache answers the next ones with the same figures, without a call.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from conftest import (
    CyclesStub,
    Provisioner,
    Responder,
    StubReply,
    StubRequest,
    assert_error,
    auth_headers,
    cycles_error,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.denials import default_topup_message, for_estimate
from {{ cookiecutter.package_name }}.errors import ApiError
from {{ cookiecutter.package_name }}.money import usd_text as usd
from localcycles import LocalCyclesServer

PROMPT = "How much is left in the jar?"
MAX_TOKENS = 16
ESTIMATE = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
BODY = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}


@pytest.fixture
def proxy(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
) -> CyclesStub:
    """The test Cycles server behind a proxy that records every request."""
    if ESTIMATE == 0:
        pytest.skip("the prompted prices are zero: no budget can run out")
    return cycles_stub(forward_to(cycles_server.base_url))


def chat(app: Flask, max_tokens: int = MAX_TOKENS) -> tuple[int, dict[str, object]]:
    body = {**BODY, "max_tokens": max_tokens}
    response = app.test_client().post("/chat", json=body, headers=auth_headers("acme"))
    if response.status_code == 402:
        return 402, assert_error(response, 402, "budget_exceeded")
    return response.status_code, response.get_json()


def paths(stub: CyclesStub) -> list[str]:
    return [request.path.partition("?")[0] for request in stub.requests]


def test_on_the_boundary_one_microcent_short_is_refused_with_every_figure(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    provisioner.set_budget("acme", allocated=ESTIMATE - 1)
    status, body = chat(make_app(proxy.base_url))
    assert status == 402
    assert {k: v for k, v in body.items() if k not in ("message", "retry_after_ms")} == {
        "error": "budget_exceeded",
        "estimate_microcents": ESTIMATE,
        "estimate_usd": usd(ESTIMATE),
        "remaining_microcents": ESTIMATE - 1,
        "remaining_usd": usd(ESTIMATE - 1),
        "limit_microcents": ESTIMATE - 1,
        "limit_usd": usd(ESTIMATE - 1),
        "how_to_get_more": default_topup_message("acme"),
    }
    assert "flask cycles fund acme" in str(body["how_to_get_more"])
    # The reservation, then one balance read for the figures; nothing else.
    assert paths(proxy) == ["/v1/reservations", "/v1/balances"]


def test_exactly_enough_is_served(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    provisioner.set_budget("acme", allocated=ESTIMATE)
    status, _ = chat(make_app(proxy.base_url))
    assert status == 200


def test_a_remembered_denial_names_its_own_estimate_without_a_cycles_call(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    provisioner.set_budget("acme", allocated=ESTIMATE - 1)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS="60000")
    chat(app)
    asked = len(proxy.requests)
    bigger = MAX_TOKENS * 2
    status, body = chat(app, max_tokens=bigger)  # asks more: the cached denial answers
    assert status == 402
    assert len(proxy.requests) == asked
    estimate = pricing.estimate(PROMPT, max_tokens=bigger)
    assert (body["estimate_microcents"], body["estimate_usd"]) == (estimate, usd(estimate))
    assert body["remaining_microcents"] == ESTIMATE - 1


def test_the_operator_sets_how_to_get_more(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    provisioner.set_budget("acme", allocated=0)
    hint = "Upgrade your plan at https://example.com/billing"
    _, body = chat(make_app(proxy.base_url, BUDGET_TOPUP_MESSAGE=hint))
    assert body["how_to_get_more"] == hint


def test_when_the_balance_cannot_be_read_the_denial_still_stands(
    proxy: CyclesStub,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
    make_app: Callable[..., Flask],
) -> None:
    provisioner.set_budget("acme", allocated=0)
    status, body = chat(make_app(cycles_stub(only_balances_fail(proxy)).base_url))
    assert status == 402
    assert "remaining_microcents" not in body and "remaining_usd" not in body
    assert body["estimate_microcents"] == ESTIMATE
    assert "how_to_get_more" in body


def only_balances_fail(proxy: CyclesStub) -> Responder:
    forward = forward_to(proxy.base_url)
    broken = cycles_error(500, "INTERNAL_ERROR")

    def respond(request: StubRequest) -> StubReply:
        return broken if request.path.startswith("/v1/balances") else forward(request)

    return respond


def test_for_estimate_keeps_every_other_field() -> None:
    denial = ApiError(402, "budget_exceeded", "No.", 5, {"remaining_microcents": 3})
    shown = for_estimate(denial, 7)
    assert (shown.status, shown.error, shown.message, shown.retry_after_ms) == (
        402,
        "budget_exceeded",
        "No.",
        5,
    )
    assert dict(shown.details) == {
        "remaining_microcents": 3,
        "estimate_microcents": 7,
        "estimate_usd": "0.00000007",
    }
