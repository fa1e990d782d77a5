"""Spending a budget down: 200s until it cannot cover the next call, then 402s."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import LLMProvider
from {{ cookiecutter.package_name }}.money import usd_text

PROMPT = "Write a haiku about careful spending."
MAX_TOKENS = 32


def test_spending_down_turns_200s_into_402s_and_charges_exactly(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    provider: LLMProvider = app.extensions["llm"]
    usage = provider.complete(prompt=PROMPT, max_tokens=MAX_TOKENS)
    cost = pricing.cost(usage.input_tokens, usage.output_tokens)
    reserve = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    if cost == 0:
        pytest.skip("the prompted prices are zero: calls cost nothing")
    # Covers the reservation three times over as the real charges come off: 3 calls fit.
    provisioner.set_budget("acme", allocated=reserve + 2 * cost)
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}

    for _ in range(3):
        assert client.post("/chat", json=body, headers=auth_headers("acme")).status_code == 200
    for _ in range(2):
        denied = client.post("/chat", json=body, headers=auth_headers("acme"))
        error = assert_error(denied, 402, "budget_exceeded")
        assert "budget" in error["message"].lower()

    balance = provisioner.balance("acme")
    assert balance["spent"] == 3 * cost
    assert balance["reserved"] == 0
    assert balance["remaining"] == reserve - cost

    shown = client.get("/budget", headers=auth_headers("acme")).get_json()
    allocated, spent, remaining = reserve + 2 * cost, 3 * cost, reserve - cost
    assert shown["balances"] == [
        {
            "scope": budget_scope("acme"),
            "allocated": allocated,
            "spent": spent,
            "reserved": 0,
            "remaining": remaining,
            "debt": 0,
            "allocated_usd": usd_text(allocated),
            "spent_usd": usd_text(spent),
            "reserved_usd": "0.00",
            "remaining_usd": usd_text(remaining),
            "debt_usd": "0.00",
        }
    ]


def test_an_estimate_larger_than_the_budget_is_refused_before_any_work(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    estimate = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    if estimate == 0:
        pytest.skip("the prompted prices are zero: calls cost nothing")
    provisioner.set_budget("acme", allocated=estimate - 1)
    denied = client.post(
        "/chat", json={"prompt": PROMPT, "max_tokens": MAX_TOKENS}, headers=auth_headers("acme")
    )
    assert_error(denied, 402, "budget_exceeded")
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (0, 0)
