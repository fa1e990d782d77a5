"""When Cycles is down, slow, rate limiting or refusing: clear JSON errors, fail closed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from runcycles import BudgetExceededError

from conftest import (
    CountingProvider,
    CyclesStub,
    Provisioner,
    Responder,
    StubReply,
    StubRequest,
    answering,
    assert_error,
    auth_headers,
    cycles_error,
    cycles_key,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget.unsettled import UnsettledStore
from {{ cookiecutter.package_name }}.web.operations import Operation, documented
from localcycles import LocalCyclesServer

BODY = {"prompt": "Is anyone there?", "max_tokens": 16}
StartStub = Callable[[Responder], CyclesStub]


def always(reply: StubReply) -> Responder:
    return lambda request: reply


def test_cycles_stopped_is_503(app: Flask, cycles_server: LocalCyclesServer) -> None:
    cycles_server.stop()
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_unavailable")


@dataclass
class SilentCycles:
    stub: CyclesStub
    answered: list[StubRequest]  # requests it answered before the test released it


@pytest.fixture
def silent_cycles(cycles_stub: StartStub) -> Iterator[SilentCycles]:
    """A Cycles server that accepts connections and answers nothing until the test ends."""
    released = threading.Event()
    answered: list[StubRequest] = []

    def hang(request: StubRequest) -> StubReply:
        if not released.wait(60):  # only if the app waited this long for an answer
            answered.append(request)
        return StubReply(500)

    yield SilentCycles(cycles_stub(hang), answered)
    released.set()


def test_cycles_not_answering_is_503_from_the_read_timeout(
    silent_cycles: SilentCycles, make_app: Callable[..., Flask]
) -> None:
    app = make_app(silent_cycles.stub.base_url, CYCLES_READ_TIMEOUT="0.3")
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_unavailable")
    # The order of events, not a duration: the app answered while Cycles was still silent,
    # so the 503 is the app's own read timeout, never Cycles' eventual answer.
    assert silent_cycles.stub.requests, "the app asked Cycles"
    assert silent_cycles.answered == []


@pytest.mark.parametrize(
    ("reply", "status", "error", "retry_after_ms"),
    [
        (cycles_error(429, "LIMIT_EXCEEDED", **{"Retry-After": "7"}), 429, "rate_limited", 7000),
        (cycles_error(500, "INTERNAL_ERROR"), 503, "cycles_unavailable", None),
        (cycles_error(401, "UNAUTHORIZED"), 503, "cycles_misconfigured", None),
        (cycles_error(403, "FORBIDDEN"), 503, "cycles_misconfigured", None),
        (StubReply(502, None), 503, "cycles_unavailable", None),
    ],
)
def test_cycles_failures_map_to_stable_errors(
    cycles_stub: StartStub,
    make_app: Callable[..., Flask],
    reply: StubReply,
    status: int,
    error: str,
    retry_after_ms: int | None,
) -> None:
    stub = cycles_stub(always(reply))
    client = make_app(stub.base_url).test_client()
    for response in (
        client.post("/chat", json=BODY, headers=auth_headers("acme")),
        client.get("/budget", headers=auth_headers("acme")),
    ):
        body = assert_error(response, status, error)
        assert body.get("retry_after_ms") == retry_after_ms
        text = response.get_data(as_text=True)
        assert "upstream detail" not in text
        # Whichever Cycles key the app holds (the operator's or the tenant's) stays hidden.
        assert cycles_key("operator") not in text
        assert cycles_key("acme") not in text


@pytest.mark.parametrize(
    ("reply", "status", "error", "retry_after_ms"),
    [
        (
            cycles_error(409, "BUDGET_EXCEEDED", **{"Retry-After": "30"}),
            402,
            "budget_exceeded",
            30_000,
        ),
        (cycles_error(409, "DEBT_OUTSTANDING"), 402, "debt_outstanding", None),
        (cycles_error(409, "OVERDRAFT_LIMIT_EXCEEDED"), 402, "overdraft_limit_exceeded", None),
        (cycles_error(409, "TENANT_CLOSED"), 403, "tenant_closed", None),
        (cycles_error(404, "NOT_FOUND"), 503, "budget_not_configured", None),
        (cycles_error(404, "BUDGET_NOT_FOUND"), 503, "budget_not_configured", None),
        (cycles_error(429, "SLOW_DOWN", **{"Retry-After": "3"}), 429, "rate_limited", 3_000),
        (cycles_error(409, "SOMETHING_NEW"), 503, "cycles_error", None),
        (cycles_error(500, "INTERNAL_ERROR"), 503, "cycles_unavailable", None),
        (cycles_error(429, "LIMIT_EXCEEDED", **{"Retry-After": "2"}), 429, "rate_limited", 2_000),
        (cycles_error(400, "INVALID_REQUEST"), 503, "cycles_error", None),
        # An ALLOW without the reservation it promises holds nothing: no answer at all.
        (
            StubReply(200, {"decision": "ALLOW", "affected_scopes": ["tenant:acme"]}),
            503,
            "cycles_unavailable",
            None,
        ),
        # A live reservation is denied with a 409; a 200 DENY is no trustworthy answer.
        (
            StubReply(200, {"decision": "DENY", "reason_code": "BUDGET_EXCEEDED"}),
            503,
            "cycles_unavailable",
            None,
        ),
    ],
)
def test_a_refused_reservation_stops_the_request_before_any_work(
    cycles_stub: StartStub,
    make_app: Callable[..., Flask],
    reply: StubReply,
    status: int,
    error: str,
    retry_after_ms: int | None,
) -> None:
    stub = cycles_stub(always(reply))
    app = make_app(stub.base_url, CYCLES_DENY_CACHE_MS="0")
    provider = CountingProvider()
    app.extensions["llm"] = provider
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    body = assert_error(response, status, error)
    assert body.get("retry_after_ms") == retry_after_ms
    # The reservation (and, for a budget denial, one balance read for the 402's body),
    # nothing committed, the provider never called.
    paths = [request.path.partition("?")[0] for request in stub.requests]
    assert paths == ["/v1/reservations"] + (["/v1/balances"] if status == 402 else [])
    assert provider.calls == 0


def test_fail_open_serves_when_cycles_is_down(
    cycles_stub: StartStub, make_app: Callable[..., Flask]
) -> None:
    stub = cycles_stub(always(cycles_error(503, "INTERNAL_ERROR")))
    app = make_app(stub.base_url, CYCLES_FAIL_OPEN="true")
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200, response.get_json()
    # Nothing was held, so nothing is committed; the spend is queued as an event for when
    # Cycles is back (retried in the background).
    paths = [request.path for request in stub.requests]
    assert paths[0] == "/v1/reservations"
    assert set(paths[1:]) <= {"/v1/events"}


def test_fail_open_never_serves_past_a_real_denial(
    app: Flask,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_server: LocalCyclesServer,
) -> None:
    # A real ledger with too little budget: fail-open covers an unavailable Cycles only.
    provisioner.set_budget("acme", allocated=1)
    fail_open = make_app(cycles_server.base_url, CYCLES_FAIL_OPEN="true")
    provider = CountingProvider()
    fail_open.extensions["llm"] = provider
    denied = fail_open.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(denied, 402, "budget_exceeded")
    assert provider.calls == 0
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (0, 0)


def test_a_runcycles_error_raised_in_a_view_is_answered_as_json(app: Flask) -> None:
    # A route of your own that uses runcycles' raising API (the @cycles decorator, say)
    # gets the same answers as the guarded routes.
    @documented(Operation(summary="Spend", answer="never", auth="open", errors=(402,)))
    def spend() -> None:
        raise BudgetExceededError(
            "no budget", status=409, error_code="BUDGET_EXCEEDED", retry_after_ms=1_500
        )

    app.add_url_rule("/custom-spend", view_func=spend)
    response = app.test_client().get("/custom-spend")
    body = assert_error(response, 402, "budget_exceeded")
    assert body["retry_after_ms"] == 1_500


@pytest.mark.parametrize(
    ("reply", "retried"),
    [
        (cycles_error(500, "INTERNAL_ERROR"), True),
        (cycles_error(409, "RESERVATION_FINALIZED"), False),
    ],
)
def test_a_commit_that_did_not_settle_is_retried_and_a_refused_one_is_not(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_stub: StartStub,
    tmp_path: Path,
    reply: StubReply,
    retried: bool,
) -> None:
    fail_commits = answering(forward_to(cycles_server.base_url), "/commit", reply)
    app = make_app(cycles_stub(fail_commits).base_url)
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    # The answer was paid for while the hold was live: it is served either way.
    assert response.status_code == 200, response.get_json()
    # Kept on disk for the settler only when it may still land.
    unsettled = UnsettledStore(tmp_path / "journal").charges()
    assert bool(unsettled) is retried
