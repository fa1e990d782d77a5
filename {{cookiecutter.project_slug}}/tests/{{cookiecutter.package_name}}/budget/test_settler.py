"""Money survives outages: charges Cycles did not take are kept, retried until they land, and
a tenant's new reservations never run ahead of them.

Cycles sits behind the fault proxy; "the outage outlasts the TTL" is a jump of a clock the
Cycles server and the app's settler share, not a wait. Every provider here reports exactly
its estimate, so a budget of N estimates is a budget for exactly N calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from conftest import (
    UNIT,
    Provisioner,
    assert_error,
    auth_headers,
    budget_scope,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.budget.settler import FIRST_BACKOFF_MS
from {{ cookiecutter.package_name }}.budget.unsettled import MAX_BACKOFF_MS
from {{ cookiecutter.package_name }}.llm import Completion
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from localcycles import LocalCyclesServer
from support.fault_proxy import FaultProxy, Refuse

PROMPT = "Tell me what this costs."
MAX_TOKENS = 32
TTL_MS = 60_000
GRACE_MS = 5_000
PATIENCE_S = 30.0
CALLS = 4  # the budget pays for exactly this many calls
ALL_OF_CYCLES = "* /v1/*"


def estimate() -> int:
    return pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)


class Clock:
    """Epoch milliseconds that run with real time, plus a jump the test makes."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class ExactProvider(FakeProvider):
    """Reports its whole estimate as usage (so a call costs what it reserved); ``gate``
    holds each call until set, so a test acts between a reservation and its commit."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__("fake-model")
        self.gate = gate
        self.started = threading.Semaphore(0)

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        self.started.release()
        if self.gate is not None:
            assert self.gate.wait(PATIENCE_S)
        text = super().complete(prompt=prompt, max_tokens=max_tokens, system=system).text
        return Completion(text, pricing.max_input_tokens(prompt), max_tokens, self.model)


class Frozen:
    """Epoch milliseconds that stand still until the test sets ``ms``."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server_clock(clock: Clock) -> Clock:
    return clock  # the Cycles server of clocked_server (support.clocked_fixtures) runs on it


@pytest.fixture
def ledger(clocked: Provisioner) -> Provisioner:
    # A budget for CALLS calls, and overdraft room to record whatever lands late.
    clocked.ledger.set_budget(
        budget_scope("acme"), UNIT, allocated=CALLS * estimate(), overdraft_limit=10**12
    )
    return clocked


@pytest.fixture
def proxy(clocked_server: LocalCyclesServer) -> Iterator[FaultProxy]:
    with FaultProxy(clocked_server.base_url) as proxy:
        yield proxy


@pytest.fixture
def new_app(
    make_app: Callable[..., Flask], proxy: FaultProxy, clock: Clock
) -> Callable[..., Flask]:
    """Makes apps behind ``proxy`` whose settler runs on ``clock`` and whose provider
    charges its estimate; ``env``: more settings."""

    def build(**env: str) -> Flask:
        app = make_app(proxy.base_url, CYCLES_DENY_CACHE_MS="0", **env)
        app.extensions["llm"] = ExactProvider()
        budget_service(app).settler.clock = clock
        return app

    return build


def without_settler_thread(app: Flask) -> Flask:
    """Only the test's run_due (and the app's requests) settle: no race with a thread."""
    budget_service(app).settler.background = False
    return app


def chat(app: Flask) -> Any:
    return app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": MAX_TOKENS}, headers=auth_headers("acme")
    )


def outage_under_calls(apps: list[Flask], proxy: FaultProxy, clock: Clock) -> list[int]:
    """Each app serves calls while Cycles goes away for longer than the TTL; statuses."""
    gate = threading.Event()
    providers = [app.extensions["llm"] for app in apps]
    for provider in providers:
        provider.gate = gate
    per_app = CALLS // len(apps)
    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        calls = [pool.submit(chat, app) for app in apps for _ in range(per_app)]
        for provider in providers:
            for _ in range(per_app):
                assert provider.started.acquire(timeout=PATIENCE_S)
        proxy.on(ALL_OF_CYCLES, Refuse())  # Cycles goes away while the calls run
        gate.set()
        statuses = [call.result().status_code for call in calls]
    for provider in providers:
        provider.gate = None
    # ... for longer than the holds live: Cycles has given their budget back.
    clock.offset_ms += TTL_MS + GRACE_MS + 1
    return statuses


def served_until_refused(app: Flask, limit: int = 3 * CALLS) -> int:
    for served in range(limit):
        response = chat(app)
        if response.status_code != 200:
            assert_error(response, 402, "budget_exceeded")
            return served
    return limit


def test_charges_that_outlast_their_holds_land_in_full_before_new_reservations(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    app = without_settler_thread(new_app())
    # Paid for while their holds were live: served, their commits left unsettled.
    assert outage_under_calls([app], proxy, clock) == [200] * CALLS
    # Still down: the tenant waits; nothing is served from the budget the holds gave back.
    body = assert_error(chat(app), 503, "cycles_unavailable")
    assert "Earlier charges" in body["message"]

    proxy.clear()  # Cycles is back ...
    clock.offset_ms += MAX_BACKOFF_MS  # ... and the next attempt is due
    assert served_until_refused(app) == 0  # the old charges took the budget first
    balance = ledger.balance("acme")
    assert balance["spent"] + balance["debt"] == CALLS * estimate()
    assert balance["reserved"] == 0
    assert budget_service(app).settler.store.charges() == []
    # Recorded as spend events that may go into debt: the whole amount, never capped.
    events = [e for e in proxy.of("POST /v1/events") if e.upstream_status == 201]
    assert len(events) == CALLS
    assert all(b'"ALLOW_WITH_OVERDRAFT"' in e.request_body for e in events)


def test_an_unsettled_charge_survives_a_restart(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    first = new_app()
    proxy.on("POST /v1/reservations/*/commit", Refuse())
    assert chat(first).status_code == 200
    budget_service(first).close()  # the process goes away with its commit unsettled
    proxy.clear()

    again = without_settler_thread(new_app())
    clock.offset_ms += MAX_BACKOFF_MS  # its next attempt is due (the hold is still live)
    budget_service(again).settler.run_due()  # what the settler thread does on its own
    assert ledger.balance("acme")["spent"] == estimate()
    assert ledger.reservation_statuses("acme") == ["COMMITTED"]
    assert budget_service(again).settler.store.charges() == []


def test_the_settler_thread_lands_charges_by_itself(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    app = new_app()
    settler = budget_service(app).settler
    proxy.on("POST /v1/reservations/*/commit", Refuse(), times=3)
    assert chat(app).status_code == 200  # its commit refused: kept for the thread
    deadline = time.monotonic() + PATIENCE_S
    while settler.store.charges() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settler.store.charges() == []
    assert ledger.reservation_statuses("acme") == ["COMMITTED"]
    assert len(proxy.of("POST /v1/reservations/{id}/commit")) == 4  # three refused


def test_the_first_retry_is_due_one_backoff_after_the_failure_and_is_made(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    app = without_settler_thread(new_app())
    settler = budget_service(app).settler
    start = clock()
    settler.clock = now = Frozen(start)  # the settler's time moves only when told
    # The first two commits the proxy sees (all of the request's own) are refused: the
    # charge is kept for a retry.
    proxy.on("POST /v1/reservations/*/commit", Refuse(), times=2)
    assert chat(app).status_code == 200

    def commits() -> int:
        return len(proxy.of("POST /v1/reservations/{id}/commit"))

    assert commits() == 2
    # Nothing is due yet; the settler thread is told to wake exactly when the retry is.
    assert settler.run_due() == FIRST_BACKOFF_MS / 1000
    now.ms = start + FIRST_BACKOFF_MS - 1
    assert settler.run_due() == 0.001
    assert commits() == 2 and settler.store.charges() == [("acme", estimate())]
    now.ms = start + FIRST_BACKOFF_MS  # the first retry is due: it is made, and lands
    assert settler.run_due() is None  # nothing left to wait for
    assert commits() == 3
    assert settler.store.charges() == []
    assert ledger.reservation_statuses("acme") == ["COMMITTED"]


def test_a_charge_is_retried_past_any_count_of_failures(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    app = without_settler_thread(new_app())
    settler = budget_service(app).settler
    proxy.on("POST /v1/reservations/*/commit", Refuse())
    assert chat(app).status_code == 200
    for _ in range(12):  # runcycles' own retries gave up after five
        clock.offset_ms += 60_000
        settler.run_due()
    assert settler.store.charges() == [("acme", estimate())]
    proxy.clear()
    clock.offset_ms += 60_000
    settler.run_due()
    assert settler.store.charges() == []
    balance = ledger.balance("acme")
    assert balance["spent"] + balance["debt"] == estimate()


def test_workers_sharing_an_instance_folder_never_run_ahead_of_each_others_charges(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
) -> None:
    # Two workers of one host: one CYCLES_JOURNAL_DIR (the instance folder), one store.
    one = new_app()
    two = new_app()
    for app in (one, two):
        without_settler_thread(app)
    assert outage_under_calls([one, two], proxy, clock) == [200] * CALLS
    proxy.clear()
    # Worker two lands worker one's charges before it reserves: not one call more.
    assert served_until_refused(two) == 0
    balance = ledger.balance("acme")
    assert balance["spent"] + balance["debt"] == CALLS * estimate()


def test_hosts_that_know_only_their_own_charges_overspend_at_most_those_charges(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    # Two hosts: each its own instance folder, so neither sees the other's charges.
    one = new_app()
    two = new_app(CYCLES_JOURNAL_DIR=str(tmp_path / "other-host"))
    for app in (one, two):
        without_settler_thread(app)
    assert outage_under_calls([one, two], proxy, clock) == [200] * CALLS
    proxy.clear()
    # Host two lands its own charges first, then spends what host one's lapsed holds gave
    # back: the overspend is bounded by host one's unsettled charges (CALLS / 2 calls) ...
    extra = served_until_refused(two)
    assert extra == CALLS // 2
    # ... and host one's charges still land in full (as debt), so the ledger is exact.
    budget_service(one).settler.run_due()
    balance = ledger.balance("acme")
    assert balance["spent"] + balance["debt"] == (CALLS + extra) * estimate()
    assert balance["debt"] == extra * estimate()
    assert balance["reserved"] == 0


def test_shadow_mode_records_the_full_cost_as_debt(
    ledger: Provisioner, proxy: FaultProxy, clock: Clock, new_app: Callable[..., Flask]
) -> None:
    app = new_app(CYCLES_MODE="shadow")
    requests = 3 * CALLS  # three times what the budget pays for
    for _ in range(requests):
        response = chat(app)
        assert response.status_code == 200
        assert response.get_json()["cost_usd_microcents"] == estimate()
    balance = ledger.balance("acme")
    assert balance["spent"] == CALLS * estimate()
    assert balance["debt"] == (requests - CALLS) * estimate()


def test_shadow_spend_the_budget_cannot_take_is_logged_and_counted(
    ledger: Provisioner,
    proxy: FaultProxy,
    clock: Clock,
    new_app: Callable[..., Flask],
    clocked_server: LocalCyclesServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocked_server.ledger.set_budget(budget_scope("acme"), UNIT, allocated=estimate())
    app = new_app(CYCLES_MODE="shadow")
    for _ in range(3):
        assert chat(app).status_code == 200
    logged = [r.getMessage() for r in caplog.records if "the budget recorded" in r.getMessage()]
    assert len(logged) == 2
    assert f"spent {estimate()} USD microcents" in logged[0] and "recorded 0" in logged[0]
    scrape = app.test_client().get("/metrics").get_data(as_text=True)
    metric = "cycles_uncharged_usd_microcents_total" + '{tenant="acme"}'
    assert f"{metric} {float(2 * estimate())}" in scrape
