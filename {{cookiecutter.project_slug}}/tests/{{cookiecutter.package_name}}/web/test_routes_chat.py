"""POST /chat and /summarize: answer, reserve the upper bound, commit the reported usage."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from conftest import (
    DEFAULT_MAX_TOKENS,
    CyclesStub,
    Provisioner,
    auth_headers,
    budget_scope,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import Completion, LLMProvider
from {{ cookiecutter.package_name }}.web.routes import SUMMARY_SYSTEM_PROMPT

PROMPT = "Explain budgets for language model calls in one short paragraph, please."


def expected(app: Flask, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
    """What the app's (deterministic) fake provider reports for this call."""
    provider: LLMProvider = app.extensions["llm"]
    return provider.complete(prompt=prompt, max_tokens=max_tokens, system=system)


def test_chat_charges_exactly_the_reported_usage(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    response = client.post(
        "/chat", json={"prompt": PROMPT, "max_tokens": 40}, headers=auth_headers("acme")
    )
    assert response.status_code == 200, response.get_json()
    usage = expected(app, PROMPT, 40)
    cost = pricing.cost(usage.input_tokens, usage.output_tokens)
    assert response.get_json() == {
        "text": usage.text,
        "model": usage.model,
        "max_tokens": 40,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        "cost_usd_microcents": cost,
    }
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (cost, 0)


def test_summarize_uses_its_instructions_and_the_default_limit(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    response = client.post("/summarize", json={"text": PROMPT}, headers=auth_headers("globex"))
    assert response.status_code == 200, response.get_json()
    usage = expected(app, PROMPT, DEFAULT_MAX_TOKENS, SUMMARY_SYSTEM_PROMPT)
    body = response.get_json()
    assert body["summary"] == usage.text and body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert provisioner.balance("globex")["spent"] == pricing.cost(
        usage.input_tokens, usage.output_tokens
    )
    assert provisioner.balance("acme")["spent"] == 0


def test_cycles_sees_the_real_subject_estimate_charge_and_metrics(
    app: Flask, recorder: CyclesStub, make_app: Callable[..., Flask]
) -> None:
    recorded_app = make_app(recorder.base_url)
    started = time.monotonic()
    response = recorded_app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": 24}, headers=auth_headers("acme")
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    assert response.status_code == 200, response.get_json()

    # The levels of acme's budget scope (tenant, and workspace where it has one), then the app.
    subject = {"app": "test-app"}
    for level in budget_scope("acme").split("/"):
        name, _, value = level.partition(":")
        subject[name] = value
    estimate = {"unit": "USD_MICROCENTS", "amount": pricing.estimate(PROMPT, max_tokens=24)}
    # Exactly two Cycles calls: the reservation (the preflight) and its commit.
    (reserve,) = recorder.bodies("/v1/reservations")
    (commit,) = recorder.bodies("/commit")
    reservation_id = recorder.requests[1].path.split("/")[3]
    assert [r.path for r in recorder.requests] == [
        "/v1/reservations",
        f"/v1/reservations/{reservation_id}/commit",
    ]
    assert reserve["subject"] == subject
    assert reserve["estimate"] == estimate
    assert reserve["action"] == {
        "kind": "llm.completion",
        "name": recorded_app.extensions["settings"].llm_model,
    }
    assert reserve["ttl_ms"] == 60_000
    assert "dry_run" not in reserve

    usage = expected(recorded_app, PROMPT, 24)
    assert commit["actual"] == {
        "unit": "USD_MICROCENTS",
        "amount": pricing.cost(usage.input_tokens, usage.output_tokens),
    }
    metrics = commit["metrics"]
    assert metrics["tokens_input"] == usage.input_tokens
    assert metrics["tokens_output"] == usage.output_tokens
    assert metrics["model_version"] == usage.model
    # The provider's time, measured inside the request: within what the test measured.
    assert 0 <= metrics["latency_ms"] <= elapsed_ms
