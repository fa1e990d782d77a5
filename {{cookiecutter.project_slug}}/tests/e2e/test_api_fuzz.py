"""Schemathesis fuzzes every route of the API document against the running app.

Bodies, query strings and headers are generated from ``GET /openapi.json`` (valid ones,
and in a second pass invalid ones), sent with a development caller's credentials through
Flask's WSGI interface to an app that talks to the real local Cycles server. Every answer
must be documented, JSON where the document says so and valid against it, never a 5xx,
and a request the app refuses must leave the caller's budget untouched.
"""

from __future__ import annotations

import schemathesis
from flask import Flask
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.web import openapi
from support.app_routes import api_of_a_test_app

# A few dozen examples per route and mode ("thorough"); a handful with HYPOTHESIS_PROFILE=quick.
EXAMPLES = max(5, settings.default.max_examples // 3)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    ignored_auth,
    unsupported_method,
    negative_data_rejection,
    positive_data_acceptance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# The document of an app with the test settings (the same for every app of this suite; the
# test checks that its app serves exactly this one). Taken here, at collection, because
# schemathesis makes one test per route from it: every route the app has, no list here.
DOCUMENT = api_of_a_test_app().document


def caller_credentials() -> dict[str, dict[str, str]]:
    """The development caller (acme), for the security scheme the document names."""
    schemes = DOCUMENT["components"]["securitySchemes"]
    name = next(name for name in schemes if name != "metricsToken")
    ((_, value),) = auth_headers("acme").items()
    secret = value.removeprefix("Bearer ")
    return {name: {"bearer": secret} if schemes[name]["type"] == "http" else {"api_key": secret}}


CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {"openapi": caller_credentials()},
        # Refusals the API documents beyond schemathesis' defaults: 413, an oversized prompt.
        "checks": {
            "negative_data_rejection": {"expected-statuses": [400, 401, 403, 413, 415, 429]},
        },
        # A well-formed alert URL is still refused when its host is internal or does not
        # resolve (alerts/destinations.py): the document cannot say which hosts those are.
        "operations": [
            {
                "include-path": "/budget/webhook",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": [200, 400, 401, 403, 404]}
                },
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_every_route_answers_as_documented(
    case: schemathesis.Case, app: Flask, provisioner: Provisioner
) -> None:
    assert openapi.document(app) == DOCUMENT
    before = provisioner.balance("acme")
    # The app of this test, also for the requests some checks send on their own.
    case.operation.schema.app = case.operation.app = app
    response = case.call(app=app)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
    media_type = response.headers.get("content-type", [""])[0].split(";")[0]
    if media_type == "application/json":
        response.json()  # raises if the body is not JSON
    case.validate_response(response, checks=CHECKS)
    if response.status_code != 200:
        assert provisioner.balance("acme") == before, "a refused request changed the budget"
