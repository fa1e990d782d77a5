"""Development: the app rolls the embedded ledger's planned budgets over by itself.

The app's wall clock is set by the test; the timer is woken by hand and the test waits
for its runs to finish (an event, not a duration).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from flask import Flask

from conftest import UNIT, app_env, budget_scope
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.budget.rollover_timer import RolloverTimer, rollover_timer
from {{ cookiecutter.package_name }}.cycles.clients import close, cycles_clients, local_server
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from support.localcycles_kit import assert_ledger_invariants, reservation_body

WAIT_S = 30  # a bound on a hung thread, never a duration the test measures


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": "local",
        "CYCLES_LOCAL_DB": str(tmp_path / "ledger.sqlite3"),
        "CYCLES_LOCAL_PORT": "0",
        "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        "LLM_PROVIDER": "fake",
        "BUDGET_PLANS": "daily=0.50/day",
        "DEFAULT_PLAN": "daily",
        "BUDGET_ROLLOVER_STATE": str(tmp_path / "rollover.json"),
    }
    return {**env, **extra}


def spend(app: Flask, tenant: str, amount: int) -> None:
    """A hold and its commit on the embedded ledger, over HTTP with the app's own key."""
    embedded = local_server(app)
    assert embedded is not None
    headers = {"X-Cycles-API-Key": embedded.api_key_for(tenant)}
    subject = cycles_clients(app).subject_body(tenant)
    with httpx.Client(base_url=embedded.base_url, headers=headers) as http:
        held = http.post("/v1/reservations", json=reservation_body(amount, subject=subject))
        assert held.status_code == 200, held.text
        committed = http.post(
            f"/v1/reservations/{held.json()['reservation_id']}/commit",
            json={"idempotency_key": "c1", "actual": {"unit": UNIT, "amount": amount}},
        )
        assert committed.status_code == 200, committed.text


def test_the_app_rolls_the_embedded_ledger_over_at_the_boundary(tmp_path: Path) -> None:
    app = create_app(local_env(tmp_path, CYCLES_LOCAL_ROLLOVER="true"))
    moment = [datetime(2027, 3, 2, 10, tzinfo=UTC)]
    app.extensions[CLOCK] = lambda: moment[0]
    timer = rollover_timer(app)
    try:
        assert timer is not None and timer.runs == 0  # nothing runs before the ledger does
        cycles_clients(app).client_for("acme")  # first use: the ledger starts, and the timer
        assert timer.wait_for_runs(1, WAIT_S)
        spend(app, "acme", 4_321)
        timer.wake()
        assert timer.wait_for_runs(2, WAIT_S)
        embedded = local_server(app)
        assert embedded is not None
        scope = budget_scope("acme")
        assert (embedded.ledger.budget(scope) or {})["spent"] == 4_321  # same day: kept

        moment[0] = datetime(2027, 3, 3, 0, 0, 30, tzinfo=UTC)
        timer.wake()
        assert timer.wait_for_runs(3, WAIT_S)
        after = embedded.ledger.budget(scope) or {}
        assert (after["spent"], after["allocated"]) == (0, 50_000_000)
        assert_ledger_invariants(embedded.ledger)
    finally:
        close(app)


def test_the_timer_runs_only_where_asked(tmp_path: Path) -> None:
    tests = create_app(local_env(tmp_path))
    development = create_app(local_env(tmp_path, APP_ENV="development"))
    server = create_app(
        {**app_env("http://127.0.0.1:9", tmp_path), "CYCLES_LOCAL_ROLLOVER": "true"}
    )
    try:
        assert rollover_timer(tests) is None  # tests: off unless a test turns it on
        assert rollover_timer(development) is not None  # development: on by default
        assert rollover_timer(server) is None  # a real server: compose runs the command
    finally:
        for app in (tests, development, server):
            close(app)


def test_a_failed_run_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = [RuntimeError("admin API unreachable")]

    def run() -> None:
        if outcomes:
            raise outcomes.pop()

    timer = RolloverTimer(run)
    with caplog.at_level(logging.WARNING):
        timer.start()
        assert timer.wait_for_runs(1, WAIT_S)
        timer.wake()
        assert timer.wait_for_runs(2, WAIT_S)
        timer.close()
    failures = [r.getMessage() for r in caplog.records if "rollover failed" in r.getMessage()]
    assert failures == ["Budget rollover failed (retried in 60s): admin API unreachable"]
