"""When Cycles is down, slow, rate limiting or refusing: clear JSON errors, fail closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from conftest import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    CyclesStub,
{%- if cookiecutter.tenant_isolation == "tenant" %}
    Provisioner,
{%- endif %}
    Responder,
    StubReply,
    StubRequest,
    assert_error,
    auth_headers,
    cycles_key,
)
from {{ cookiecutter.package_name }}.localcycles import LocalCyclesServer

BODY = {"prompt": "Is anyone there?", "max_tokens": 16}
StartStub = Callable[[Responder], CyclesStub]


def cycles_error(status: int, code: str, **headers: str) -> StubReply:
    """An error exactly as a Cycles server sends it."""
    body = {"error": code, "message": f"{code} (upstream detail)", "request_id": "req_1"}
    return StubReply(status, {**body, "trace_id": "0af7651916cd43dd8448eb211c80319c"}, headers)


def always(reply: StubReply) -> Responder:
    return lambda request: reply


def allow_then(reserve_reply: StubReply) -> Responder:
    """decide says ALLOW; the reservation gets ``reserve_reply``."""

    def respond(request: StubRequest) -> StubReply:
        if request.path.endswith("/v1/decide"):
            return StubReply(200, {"decision": "ALLOW", "affected_scopes": ["tenant:x"]})
        return reserve_reply

    return respond


def test_cycles_stopped_is_503_within_the_timeout(
    app: Flask, cycles_server: LocalCyclesServer
) -> None:
    cycles_server.stop()
    started = time.monotonic()
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_unavailable")
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + READ_TIMEOUT_S


@pytest.fixture
def silent_cycles(cycles_stub: StartStub) -> Iterator[CyclesStub]:
    """A Cycles server that accepts connections and never answers (until the test ends)."""
    done = threading.Event()

    def hang(request: StubRequest) -> StubReply:
        done.wait(10)
        return StubReply(500)

    yield cycles_stub(hang)
    done.set()


def test_cycles_not_answering_is_503_within_the_read_timeout(
    silent_cycles: CyclesStub, make_app: Callable[..., Flask]
) -> None:
    app = make_app(silent_cycles.base_url, CYCLES_READ_TIMEOUT="0.3")
    started = time.monotonic()
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_unavailable")
    assert time.monotonic() - started < 2.0


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
{%- if cookiecutter.tenant_isolation == "workspace" %}
        assert cycles_key("operator") not in text
{%- else %}
        assert cycles_key("acme") not in text
{%- endif %}


@pytest.mark.parametrize(
    ("reason", "status", "error"),
    [
        ("BUDGET_EXCEEDED", 402, "budget_exceeded"),
        ("DEBT_OUTSTANDING", 402, "debt_outstanding"),
        ("OVERDRAFT_LIMIT_EXCEEDED", 402, "overdraft_limit_exceeded"),
        ("BUDGET_NOT_FOUND", 503, "budget_not_configured"),
        ("SOMETHING_NEW", 402, "budget_denied"),
    ],
)
def test_preflight_denials(
    cycles_stub: StartStub, make_app: Callable[..., Flask], reason: str, status: int, error: str
) -> None:
    deny = {"decision": "DENY", "reason_code": reason, "retry_after_ms": 30_000}
    stub = cycles_stub(always(StubReply(200, deny)))
    client = make_app(stub.base_url).test_client()
    response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    body = assert_error(response, status, error)
    assert body["retry_after_ms"] == 30_000
    assert response.headers["Retry-After"] == "30"
    assert not stub.bodies("/v1/reservations"), "a denial must stop the request before any work"


@pytest.mark.parametrize(
    ("reply", "status", "error"),
    [
        (cycles_error(409, "BUDGET_EXCEEDED"), 402, "budget_exceeded"),
        (cycles_error(409, "DEBT_OUTSTANDING"), 402, "debt_outstanding"),
        (cycles_error(409, "OVERDRAFT_LIMIT_EXCEEDED"), 402, "overdraft_limit_exceeded"),
        (cycles_error(409, "TENANT_CLOSED"), 403, "tenant_closed"),
        (cycles_error(404, "NOT_FOUND"), 503, "budget_not_configured"),
        (cycles_error(500, "INTERNAL_ERROR"), 503, "cycles_unavailable"),
        (cycles_error(429, "LIMIT_EXCEEDED", **{"Retry-After": "2"}), 429, "rate_limited"),
        (cycles_error(400, "INVALID_REQUEST"), 503, "cycles_error"),
    ],
)
def test_reservation_errors(
    cycles_stub: StartStub,
    make_app: Callable[..., Flask],
    reply: StubReply,
    status: int,
    error: str,
) -> None:
    stub = cycles_stub(allow_then(reply))
    client = make_app(stub.base_url).test_client()
    response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, status, error)


def test_fail_open_serves_when_cycles_is_down(
    cycles_stub: StartStub, make_app: Callable[..., Flask]
) -> None:
    stub = cycles_stub(always(cycles_error(503, "INTERNAL_ERROR")))
    app = make_app(stub.base_url, CYCLES_FAIL_OPEN="true")
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200, response.get_json()
    # Fail-open covers an unavailable Cycles only, never a denial.
    deny = {"decision": "DENY", "reason_code": "BUDGET_EXCEEDED"}
    denying = cycles_stub(always(StubReply(200, deny)))
    app = make_app(denying.base_url, CYCLES_FAIL_OPEN="true")
    denied = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(denied, 402, "budget_exceeded")
{%- if cookiecutter.tenant_isolation == "tenant" %}


def test_a_cycles_key_of_another_tenant_is_refused_by_cycles(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # A deployment mistake: acme's requests carry globex's Cycles key.
    swapped = f"acme={cycles_key('globex')},globex={cycles_key('acme')}"
    app = make_app(cycles_server.base_url, CYCLES_TENANT_API_KEYS=swapped)
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_misconfigured")
    assert provisioner.balance("globex")["spent"] == 0
{%- endif %}
