"""CYCLES_MODE=shadow: evaluate as a dry run, log would-be denials, serve, record the spend."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from conftest import (
    CyclesStub,
    Provisioner,
    Responder,
    answering,
    assert_error,
    auth_headers,
    cycles_error,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.unsettled import UnsettledStore
from {{ cookiecutter.package_name }}.config import ConfigError
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from localcycles import LocalCyclesServer

PROMPT = "What would this have cost?"
MAX_TOKENS = 16
BODY = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}


def expected_cost() -> int:
    usage = FakeProvider("fake-model").complete(prompt=PROMPT, max_tokens=MAX_TOKENS)
    return pricing.cost(usage.input_tokens, usage.output_tokens)


@pytest.fixture
def recorded(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
) -> CyclesStub:
    return cycles_stub(forward_to(cycles_server.base_url))


def shadow_app(make_app: Callable[..., Flask], base_url: str) -> Flask:
    app = make_app(base_url, CYCLES_MODE="shadow")
    app.extensions["llm"] = FakeProvider("fake-model")
    return app


def test_shadow_mode_records_the_spend_without_holding_anything(
    recorded: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    app = shadow_app(make_app, recorded.base_url)
    response = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["cost_usd_microcents"] == expected_cost()
    # Two Cycles calls: the dry-run reservation and the spend event.
    assert [request.path for request in recorded.requests] == ["/v1/reservations", "/v1/events"]
    (dry_run,) = recorded.bodies("/v1/reservations")
    assert dry_run["dry_run"] is True
    (event,) = recorded.bodies("/v1/events")
    assert event["actual"] == {"unit": "USD_MICROCENTS", "amount": expected_cost()}
    assert provisioner.reservation_statuses("acme") == []
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (expected_cost(), 0)


def test_shadow_mode_serves_and_logs_what_enforce_mode_denies(
    recorded: CyclesStub,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    provisioner.set_budget("acme", allocated=1)
    enforcing = make_app(recorded.base_url)
    denied = enforcing.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(denied, 402, "budget_exceeded")

    app = shadow_app(make_app, recorded.base_url)
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # the second is not answered from the deny cache either
        served = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
        assert served.status_code == 200, served.get_json()
    estimate = pricing.cost(len(PROMPT.encode()) + 8, MAX_TOKENS)
    would_deny = [r.getMessage() for r in caplog.records if "would deny" in r.getMessage()]
    assert len(would_deny) == 2
    assert "acme" in would_deny[0] and str(estimate) in would_deny[0]
    assert "budget_exceeded" in would_deny[0]
    assert provisioner.reservation_statuses("acme") == []
    # The spend is recorded as far as the budget goes; nothing is held.
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (1, 0)


def test_an_unknown_mode_is_refused_at_start_up(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError, match="CYCLES_MODE"):
        make_app("http://127.0.0.1:9", CYCLES_MODE="observe")


@pytest.mark.parametrize("status", [401, 403, 429, 500])
def test_a_spend_event_cycles_did_not_take_is_kept_for_a_retry(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
    tmp_path: Path,
    status: int,
) -> None:
    refuse_events = answering(
        forward_to(cycles_server.base_url), "/v1/events", cycles_error(status, "NOT_NOW")
    )
    app = shadow_app(make_app, cycles_stub(refuse_events).base_url)
    served = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert served.status_code == 200
    # The spend was not lost: it waits on disk for the settler to retry it.
    assert UnsettledStore(tmp_path / "journal").charges() == [("acme", expected_cost())]


def test_shadow_mode_serves_when_cycles_cannot_evaluate(
    cycles_stub: Callable[[Responder], CyclesStub], make_app: Callable[..., Flask]
) -> None:
    down = cycles_error(500, "INTERNAL_ERROR")
    stub = cycles_stub(lambda request: down)
    app = shadow_app(make_app, stub.base_url)
    served = app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert served.status_code == 200, served.get_json()
