"""A tenant out of budget is answered from the deny cache: one Cycles call per window.

Traffic to the real Cycles server goes through a recording proxy, so every reservation the
app asks for is counted where Cycles sees it. The cache runs on a clock the test moves:
a window opens and closes exactly when the test says, however loaded the machine is.
"""

from __future__ import annotations

import threading
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
    assert_error,
    auth_headers,
    cycles_error,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.deny_cache import DenyCache
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.errors import ApiError
from localcycles import LocalCyclesServer

PROMPT = "Is there budget left?"
BODY = {"prompt": PROMPT, "max_tokens": 16}
StartStub = Callable[[Responder], CyclesStub]
LONG_WINDOW_MS = 30_000
# Clock steps are exact binary fractions, so the expected milliseconds are exact too.
STEP_S = 0.125


class FakeClock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fake_clock(app: Flask) -> FakeClock:
    """Give ``app``'s deny cache (same window and size) a clock the test moves."""
    budgets = budget_service(app)
    clock = FakeClock()
    real = budgets.deny_cache
    budgets.deny_cache = DenyCache(real.window_ms, max_entries=real.max_entries, clock=clock)
    return clock


@pytest.fixture
def proxy(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, cycles_stub: StartStub
) -> CyclesStub:
    """The test Cycles server behind a proxy that records every request."""
    return cycles_stub(forward_to(cycles_server.base_url))


def reservations_asked(stub: CyclesStub, tenant: str = "acme") -> int:
    """Reservations the app asked Cycles to create for ``tenant`` (its budget checks)."""
    return sum(
        1
        for request in stub.requests
        if request.method == "POST"
        and request.path.split("?")[0] == "/v1/reservations"
        and tenant in request.body["subject"].values()
    )


def chat(app: Flask, tenant: str, body: dict[str, Any] | None = None) -> TestResponse:
    return app.test_client().post("/chat", json=body or BODY, headers=auth_headers(tenant))


def broke(provisioner: Provisioner, tenant: str = "acme") -> None:
    if pricing.estimate(PROMPT, max_tokens=16) == 0:
        pytest.skip("the prompted prices are zero: no budget can run out")
    provisioner.set_budget(tenant, allocated=0)


def test_a_broke_tenant_costs_one_reservation_attempt_per_window(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    clock = fake_clock(app)
    first = assert_error(chat(app, "acme"), 402, "budget_exceeded")
    assert first["retry_after_ms"] == LONG_WINDOW_MS
    for step in range(1, 6):
        clock.advance(STEP_S)
        response = chat(app, "acme")
        cached = assert_error(response, 402, "budget_exceeded")
        assert cached["message"] == first["message"]
        # The advice counts down with the clock, to the millisecond.
        assert cached["retry_after_ms"] == LONG_WINDOW_MS - step * 125
        assert response.headers["Retry-After"] == "30"
    assert reservations_asked(proxy) == 1
    assert provisioner.reservation_statuses("acme") == []  # nothing was ever held


def test_the_other_tenant_is_unaffected(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner, "acme")
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    fake_clock(app)
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    for _ in range(3):
        assert chat(app, "globex").status_code == 200
        assert_error(chat(app, "acme"), 402, "budget_exceeded")
    # globex asked every time (allowances are never cached); acme asked once.
    assert (reservations_asked(proxy, "acme"), reservations_asked(proxy, "globex")) == (1, 3)


def test_a_top_up_is_seen_once_the_window_has_passed(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    window_s = 4 * STEP_S
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(int(window_s * 1000)))
    clock = fake_clock(app)
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    provisioner.set_budget("acme", allocated=DEFAULT_BUDGET)
    clock.advance(window_s - STEP_S)  # the last moment of the window
    assert_error(chat(app, "acme"), 402, "budget_exceeded")  # still the cached answer
    assert reservations_asked(proxy) == 1

    clock.advance(STEP_S)  # the window is over: the next request asks Cycles again
    for _ in range(2):
        assert chat(app, "acme").status_code == 200
    assert reservations_asked(proxy) == 3


def test_zero_disables_the_cache(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner)
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS="0")
    for _ in range(3):
        body = assert_error(chat(app, "acme"), 402, "budget_exceeded")
        assert "retry_after_ms" not in body  # the test server advises no delay
    assert reservations_asked(proxy) == 3
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
    fake_clock(app)
    assert_error(chat(app, "acme", large), 402, "budget_exceeded")
    assert_error(chat(app, "acme", large), 402, "budget_exceeded")
    assert reservations_asked(proxy) == 1
    assert chat(app, "acme", small).status_code == 200  # it may fit: Cycles decides
    assert reservations_asked(proxy) == 2


def test_cycles_retry_advice_is_kept_but_asked_again_after_the_window(
    cycles_stub: StartStub, make_app: Callable[..., Flask]
) -> None:
    denied = cycles_error(409, "BUDGET_EXCEEDED", **{"Retry-After": "30"})
    stub = cycles_stub(lambda request: denied)
    window_s = 2 * STEP_S  # much shorter than Cycles' advice
    app = make_app(stub.base_url, CYCLES_DENY_CACHE_MS=str(int(window_s * 1000)))
    clock = fake_clock(app)
    assert assert_error(chat(app, "acme"), 402, "budget_exceeded")["retry_after_ms"] == 30_000
    clock.advance(STEP_S)
    cached = assert_error(chat(app, "acme"), 402, "budget_exceeded")
    assert cached["retry_after_ms"] == 30_000 - 125  # Cycles' advice, counting down
    assert reservations_asked(stub) == 1
    clock.advance(window_s - STEP_S)  # the cache window is over; the advice is not
    assert assert_error(chat(app, "acme"), 402, "budget_exceeded")["retry_after_ms"] == 30_000
    assert reservations_asked(stub) == 2


def test_a_burst_of_threads_makes_one_call_per_window(
    proxy: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    broke(provisioner)
    window_s = 2 * STEP_S
    app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS=str(int(window_s * 1000)))
    clock = fake_clock(app)
    assert_error(chat(app, "acme"), 402, "budget_exceeded")
    statuses: list[int] = []

    def burst() -> None:
        def hammer() -> None:
            client = app.test_client()
            for _ in range(5):
                response = client.post("/chat", json=BODY, headers=auth_headers("acme"))
                statuses.append(response.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    burst()  # inside the window: all answered from the cache
    assert reservations_asked(proxy) == 1
    clock.advance(window_s)  # the window is over, for every thread at once
    burst()
    # The first thread to notice asks Cycles; the others keep the cached answer meanwhile.
    assert reservations_asked(proxy) == 2
    assert statuses == [402] * 80


def test_the_cache_holds_a_bounded_number_of_tenants() -> None:
    clock = FakeClock()
    cache = DenyCache(1_000, max_entries=3, clock=clock)
    denial = ApiError(402, "budget_exceeded", "No budget.")
    for tenant in ("a", "b", "c", "d", "e"):
        cache.remember(tenant, 10, denial)
        assert len(cache) <= 3  # never over the cap, not even for a moment
    assert len(cache) == 3
    assert cache.lookup("a", 10) is None  # the oldest made room
    hit = cache.lookup("e", 10)
    assert hit is not None and hit.retry_after_ms == 1_000
    clock.advance(0.375)
    hit = cache.lookup("e", 99)
    assert hit is not None and hit.retry_after_ms == 625
    assert cache.lookup("e", 9) is None  # a smaller request may fit: ask Cycles
    clock.advance(0.625)
    assert cache.lookup("e", 10) is None  # stale: this caller asks Cycles ...
    assert cache.lookup("e", 10) is not None  # ... while the others keep the answer
    cache.forget("e")
    assert cache.lookup("e", 10) is None


def test_cycles_advising_an_immediate_retry_is_not_cached(
    cycles_stub: StartStub, make_app: Callable[..., Flask]
) -> None:
    denied = cycles_error(409, "BUDGET_EXCEEDED")
    denied.body["retry_after_ms"] = 0
    stub = cycles_stub(lambda request: denied)
    app = make_app(stub.base_url, CYCLES_DENY_CACHE_MS=str(LONG_WINDOW_MS))
    fake_clock(app)
    for _ in range(2):
        assert assert_error(chat(app, "acme"), 402, "budget_exceeded")["retry_after_ms"] == 0
    assert reservations_asked(stub) == 2  # "retry now" means: ask again, not from the cache


def test_details_added_later_reach_every_cached_answer_with_its_timing() -> None:
    clock = FakeClock()
    cache = DenyCache(1_000, clock=clock)
    cache.remember("acme", 10, ApiError(402, "budget_exceeded", "No budget."))
    cache.add_details("globex", ApiError(402, "x", "y", None, {"remaining_usd": "9.00"}))
    cache.add_details("acme", ApiError(402, "x", "y", None, {"remaining_usd": "0.00"}))
    clock.advance(STEP_S)
    cached = cache.lookup("acme", 10)
    assert cached is not None
    assert dict(cached.details) == {"remaining_usd": "0.00"}
    assert cached.retry_after_ms == 1_000 - int(STEP_S * 1000)  # the window counts down
    assert cache.lookup("globex", 10) is None  # nothing made up for a tenant not denied
