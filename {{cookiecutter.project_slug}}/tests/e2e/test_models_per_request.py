"""Models per request (LLM_MODELS): the body's ``model`` picks a served model, priced at its
own prices and held under its own Cycles scope (``.../workflow:<model>``), where a budget
caps the tenant's spend on that model; an unknown model is a 400 before any budget is held.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from conftest import UNIT, Provisioner, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.config import app_settings
from {{ cookiecutter.package_name }}.llm import FakeProvider
from localcycles import LocalCyclesServer

PROMPT = "Name three rivers of Europe."
PRICEY = "pricey-model"  # $10 in, $40 out per million tokens
MODELS = f"{PRICEY}=10/40,cheap-model=0.10/0.40"


@pytest.fixture
def multi_model_app(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> Flask:
    return make_app(cycles_server.base_url, LLM_MODELS=MODELS)


def model_scope(tenant: str, model: str) -> str:
    """Where a budget caps ``tenant``'s spend on ``model`` (CYCLES_APP=test-app in tests)."""
    return f"{budget_scope(tenant)}/app:test-app/workflow:{model}"


def test_the_named_model_answers_at_its_own_prices(
    multi_model_app: Flask, provisioner: Provisioner
) -> None:
    settings = app_settings(multi_model_app)
    # A budget on the model's own scope sees the call too: it was held and charged there.
    provisioner.ledger.set_budget(model_scope("acme", PRICEY), UNIT, allocated=10**9)
    response = multi_model_app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": 20, "model": PRICEY},
        headers=auth_headers("acme"),
    )
    assert response.status_code == 200, response.get_json()
    usage = FakeProvider(PRICEY).complete(prompt=PROMPT, max_tokens=20)
    cost = pricing.cost(usage.input_tokens, usage.output_tokens, prices=settings.prices_of(PRICEY))
    assert response.get_json()["model"] == PRICEY
    assert response.get_json()["cost_usd_microcents"] == cost
    assert cost != pricing.cost(usage.input_tokens, usage.output_tokens)  # not the default's
    assert provisioner.balance("acme")["spent"] == cost
    model_budget = provisioner.ledger.budget(model_scope("acme", PRICEY), UNIT)
    assert model_budget is not None and model_budget["spent"] == cost


def test_an_unknown_model_is_a_400_before_any_budget_is_held(
    multi_model_app: Flask, provisioner: Provisioner
) -> None:
    response = multi_model_app.test_client().post(
        "/chat", json={"prompt": PROMPT, "model": "gpt-unknown"}, headers=auth_headers("acme")
    )
    body = assert_error(response, 400, "invalid_request")
    assert "model" in body["message"] and PRICEY in body["message"]
    assert provisioner.reservation_statuses("acme") == []
    assert provisioner.balance("acme")["spent"] == 0


def test_a_model_budget_caps_that_model_only(
    multi_model_app: Flask, provisioner: Provisioner
) -> None:
    client = multi_model_app.test_client()
    provisioner.ledger.set_budget(model_scope("acme", PRICEY), UNIT, allocated=1_000)
    denied = client.post(
        "/chat", json={"prompt": PROMPT, "model": PRICEY}, headers=auth_headers("acme")
    )
    assert_error(denied, 402, "budget_exceeded")
    # The tenant's other models, and the other tenant's calls on this one, still run.
    for model, tenant in (("cheap-model", "acme"), (None, "acme"), (PRICEY, "globex")):
        body = {"prompt": PROMPT, **({"model": model} if model else {})}
        answer = client.post("/chat", json=body, headers=auth_headers(tenant))
        assert answer.status_code == 200, (model, tenant, answer.get_json())
    capped = provisioner.ledger.budget(model_scope("acme", PRICEY), UNIT)
    assert capped is not None and capped["spent"] == 0 and capped["reserved"] == 0


def test_the_api_document_lists_the_served_models(multi_model_app: Flask) -> None:
    document = multi_model_app.test_client().get("/openapi.json").get_json()
    settings = app_settings(multi_model_app)
    for name in ("ChatRequest", "SummarizeRequest"):
        model = document["components"]["schemas"][name]["properties"]["model"]
        assert model["enum"] == [settings.llm_model, PRICEY, "cheap-model"]
        assert model["default"] == settings.llm_model
