"""A failing provider answers 502 and releases the reservation: the budget is untouched."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, auth_headers
from {{ cookiecutter.package_name }}.llm import FakeProvider


def test_provider_failure_is_502_and_releases(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FakeProvider("fake-model", fail_with="vendor said: account 42 is out")
    before = provisioner.balance("acme")

    for route, body in (("/chat", {"prompt": "hi"}), ("/summarize", {"text": "some text"})):
        response = client.post(route, json=body, headers=auth_headers("acme"))
        error = assert_error(response, 502, "provider_error")
        assert "account 42" not in error["message"], "vendor detail must not reach the caller"

    after = provisioner.balance("acme")
    assert after == before
    assert (after["spent"], after["reserved"]) == (0, 0)
    assert provisioner.reservation_statuses("acme") == ["RELEASED", "RELEASED"]
