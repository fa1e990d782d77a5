"""ALLOW_WITH_CAPS: the provider is given at most the cap Cycles sets on max_tokens.

Cycles reads caps from the budget of the subject's own scope (the deepest: the app's
``app:`` scope under the caller's), as the reference server does: support/caps_kit.py.
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import Completion, LLMProvider
from support.caps_kit import cap_calls

PROMPT = "List every prime number below one hundred, separated by commas."


class RecordingProvider:
    """Wraps the app's provider and remembers the max_tokens of every call."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.max_tokens_seen: list[int] = []

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        self.max_tokens_seen.append(max_tokens)
        return self.inner.complete(prompt=prompt, max_tokens=max_tokens, system=system)


def test_a_cap_cuts_max_tokens_and_the_charge(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    recorder = RecordingProvider(app.extensions["llm"])
    app.extensions["llm"] = recorder
    cap_calls(app, provisioner, "acme", {"max_tokens": 5})

    response = client.post(
        "/chat", json={"prompt": PROMPT, "max_tokens": 200}, headers=auth_headers("acme")
    )
    assert response.status_code == 200, response.get_json()
    assert recorder.max_tokens_seen == [5]
    body = response.get_json()
    assert body["max_tokens"] == 5 and body["usage"]["output_tokens"] <= 5
    usage = recorder.inner.complete(prompt=PROMPT, max_tokens=5)
    assert provisioner.balance("acme")["spent"] == pricing.cost(
        usage.input_tokens, usage.output_tokens
    )


def test_a_cap_above_the_request_changes_nothing(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    recorder = RecordingProvider(app.extensions["llm"])
    app.extensions["llm"] = recorder
    cap_calls(app, provisioner, "acme", {"max_tokens": 1_000})
    response = client.post(
        "/chat", json={"prompt": PROMPT, "max_tokens": 20}, headers=auth_headers("acme")
    )
    assert response.status_code == 200
    assert recorder.max_tokens_seen == [20]


def test_a_zero_cap_refuses_and_releases(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    recorder = RecordingProvider(app.extensions["llm"])
    app.extensions["llm"] = recorder
    cap_calls(app, provisioner, "acme", {"max_tokens": 0})
    response = client.post("/chat", json={"prompt": PROMPT}, headers=auth_headers("acme"))
    assert_error(response, 402, "budget_capped")
    assert recorder.max_tokens_seen == []
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (0, 0)
