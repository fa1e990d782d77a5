"""A tenant out of budget is answered from the deny cache: one Cycles call per window.

Traffic to the real Cycles server goes through a recording proxy, so every ``decide`` the
app makes is counted where Cycles sees it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from conftest import (
    DEFAULT_BUDGET,
    CyclesStub,
    Provisioner,
    Responder,
    StubReply,
    assert_error,
    auth_headers,
    forward_to,
)
from {{ cookiecutter.package_name }} import pricing
from {{ cookiecutter.package_name }}.denycache import DenyCache
from {{ cookiecutter.package_name }}.errors import ApiError
from {{ cookiecutter.package_name }}.localcycles import LocalCyclesServer

PROMPT = "Is there budget left?"
BODY = {"prompt": PROMPT, "max_tokens": 16}
StartStub = Callable[[Responder], CyclesStub]
LONG_WINDOW_MS = 30_000  # longer than any of these tests: nothing expires by accident


@pytest.fixture
def proxy(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, cycles_stub: StartStub
) -> CyclesStub:
    """The test Cycles server behind a proxy that records every request."""
    return cycles_stub(forward_to(cycles_server.base_url))


def decides(stub: CyclesStub) -> int:
    return len(stub.bodies("/v1/decide"))


def chat(app: Flask, tenant: str, body: dict[str, Any] | None = None) -> TestResponse:
    return app.test_client().post("/chat", json=body or BODY, headers=auth_headers(tenant))


def broke(provisioner: Provisioner, tenant: str = "acme") -> None:
    if pricing.estimate(PROMPT, max_tokens=16) == 0:
        pytest.skip("the prompted prices are zero: no budget can run out")
    provisioner.set_budget(tenant, allocated=0)


def test_a_broke_tenant_costs_one_decide_per_window(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    first = assert_error(chat(app, "acme"), 402, "budget_exceeded")
    assert first["retry_after_ms"] == LONG_WINDOW_MS
    previous = first["retry_after_ms"]
    for _ in range(5):
        response = chat(app, "acme")
        cached = assert_error(response, 402, "budget_exceeded")
        assert cached["message"] == first["message"]
        assert 0 < cached["retry_after_ms"] <= previous
        assert response.headers["Retry-After"] == "30"
        previous = cached["retry_after_ms"]
    assert decides(proxy) == 1
    assert not proxy.bodies("/v1/reservations")


def test_the_other_tenant_is_unaffected(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner, "acme")
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    for _ in range(3):
        assert chat(app, "globex").status_code == 200
    # globex asked every time (allowances are never cached); acme asked once.
    assert decides(proxy) == 1 + 3
    assert len(proxy.bodies("/v1/reservations")) == 3


def test_a_top_up_is_seen_once_the_window_has_passed(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    window_s = 0.5
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(int(window_s * 1000)))
    denied_at = time.monotonic()
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    provisioner.set_budget("acme", allocated=DEFAULT_BUDGET)
    assert_error(chat(app, "acme"), 402, "budget_exceeded")  # still the cached answer
    assert time.monotonic() - denied_at < window_s, "too slow to observe the cached answer"
    assert decides(proxy) == 1

    time.sleep(window_s + 0.05)
    for _ in range(2):
        assert chat(app, "acme").status_code == 200
    assert decides(proxy) == 3


def test_zero_disables_the_cache(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS="0")
    for _ in range(3):
        body = assert_error(chat(app, "acme"), 402, "budget_exceeded")
        assert "retry_after_ms" not in body  # the test server advises no delay
    assert decides(proxy) == 3
    provisioner.set_budget("acme", allocated=DEFAULT_BUDGET)
    assert chat(app, "acme").status_code == 200


def test_a_smaller_request_still_asks_cycles(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    small = {"prompt": PROMPT, "max_tokens": 16}
    large = {"prompt": PROMPT, "max_tokens": 256}
    small_estimate = pricing.estimate(PROMPT, max_tokens=16)
    if small_estimate == pricing.estimate(PROMPT, max_tokens=256):
        pytest.skip("the prompted output price is zero: both requests cost the same")
    provisioner.set_budget("acme", allocated=small_estimate)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    assert_error(chat(app, "acme", large), 402, "budget_exceeded")
    assert_error(chat(app, "acme", large), 402, "budget_exceeded")
    assert decides(proxy) == 1
    assert chat(app, "acme", small).status_code == 200  # it may fit: Cycles decides
    assert decides(proxy) == 2


def test_cycles_retry_advice_is_kept_but_asked_again_after_the_window(
    cycles_stub: StartStub, make_app: Callable[..., Flask]
) -> None:
    deny = {"decision": "DENY", "reason_code": "BUDGET_EXCEEDED", "retry_after_ms": 30_000}
    stub = cycles_stub(lambda request: StubReply(200, deny))
    app = make_app(stub.base_url, CYCLES_DENY_CACHE_MS="200")
    assert assert_error(chat(app, "acme"), 402, "budget_exceeded")["retry_after_ms"] == 30_000
    cached = assert_error(chat(app, "acme"), 402, "budget_exceeded")
    assert 29_000 < cached["retry_after_ms"] <= 30_000
    assert decides(stub) == 1
    time.sleep(0.25)  # the cache window (200 ms) is shorter than Cycles' advice
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    assert decides(stub) == 2


def test_a_burst_of_threads_makes_one_call_per_window(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    window_s = 0.2
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(int(window_s * 1000)))
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    statuses: list[int] = []
    started = time.monotonic()

    def hammer() -> None:
        client = app.test_client()
        while time.monotonic() - started < 3 * window_s:
            response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
            statuses.append(response.status_code)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert set(statuses) == {402}
    assert len(statuses) > 8
    # One decide to start, then one per expired window: never one per thread.
    assert decides(proxy) <= 1 + elapsed / window_s + 1


def test_the_cache_holds_a_bounded_number_of_tenants() -> None:
    now = [0.0]
    cache = DenyCache(1_000, max_entries=3, clock=lambda: now[0])
    denial = ApiError(402, "budget_exceeded", "No budget.")
    for tenant in ("a", "b", "c", "d", "e"):
        cache.remember(tenant, 10, denial)
    assert len(cache) == 3
    assert cache.lookup("a", 10) is None  # the oldest made room
    hit = cache.lookup("e", 10)
    assert hit is not None and hit.retry_after_ms == 1_000
    now[0] = 0.4
    hit = cache.lookup("e", 99)
    assert hit is not None and hit.retry_after_ms == 600
    assert cache.lookup("e", 9) is None  # a smaller request may fit: ask Cycles
    now[0] = 1.0
    assert cache.lookup("e", 10) is None  # stale: this caller asks Cycles ...
    assert cache.lookup("e", 10) is not None  # ... while the others keep the answer
    cache.forget("e")
    assert cache.lookup("e", 10) is None
