"""GET /openapi.json: the API document covers every route, status, limit and the auth scheme.

(Every response of the whole suite is also checked against it: see openapi_contract.py.)
"""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator

from conftest import MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, Provisioner, auth_headers
from {{ cookiecutter.package_name }}.web import caller_scheme
from {{ cookiecutter.package_name }}.web.operations import is_undocumented
from {{ cookiecutter.package_name }}.web.schemas import DeltaEvent, DoneEvent


def test_the_document_is_openapi_3_1_and_names_every_route(app: Flask, client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    routes = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        and not is_undocumented(app.view_functions[rule.endpoint])  # the docs page
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented
    assert ("/docs", "get") not in routes  # the docs page is on here, and left out


def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    """What client generators and other teams' tools check first (openapi-spec-validator:
    the 3.1 meta-schema, and every default and example against its own schema)."""
    document = client.get("/openapi.json").get_json()
    problems = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert problems == []


def test_guarded_routes_document_every_error_and_the_auth_scheme(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    schemes = document["components"]["securitySchemes"]
    # The project's way of naming the caller (web/caller_scheme.py, one file per answer),
    # and the credentials the suite's callers send fit it.
    assert schemes[caller_scheme.SCHEME_NAME] == caller_scheme.SCHEME
    assert set(schemes) == {caller_scheme.SCHEME_NAME, "metricsToken"}
    tenant_security = [{caller_scheme.SCHEME_NAME: []}]
    scheme = caller_scheme.SCHEME
    header = "Authorization" if scheme["type"] == "http" else scheme["name"]
    assert set(auth_headers("acme")) == {header}
    for path, method in (("/chat", "post"), ("/summarize", "post"), ("/budget", "get")):
        operation = document["paths"][path][method]
        assert operation["security"] == tenant_security
        for status in ("401", "403", "429", "500", "503"):
            error = operation["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    for path in ("/chat", "/summarize"):
        statuses = set(document["paths"][path]["post"]["responses"])
        assert {"200", "400", "402", "413", "415", "502", "504"} <= statuses
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_the_document_carries_this_deployments_limits(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    chat = schemas["ChatRequest"]
    assert chat["additionalProperties"] is False and chat["required"] == ["prompt"]
    assert chat["properties"]["prompt"]["maxLength"] == MAX_PROMPT_CHARS
    assert chat["properties"]["max_tokens"]["maximum"] == MAX_TOKENS_LIMIT
    assert chat["properties"]["stream"]["type"] == "boolean"
    assert schemas["SummarizeRequest"]["properties"]["text"]["maxLength"] == MAX_PROMPT_CHARS


def test_the_streaming_variant_is_documented_and_its_events_match(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    document = client.get("/openapi.json").get_json()
    content = document["paths"]["/chat"]["post"]["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/event-stream"}
    response = client.post(
        "/chat", json={"prompt": "stream it", "stream": True}, headers=auth_headers("acme")
    )
    assert response.mimetype == "text/event-stream"
    data = [
        json.loads(line.removeprefix("data: "))
        for line in response.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]
    for event in data[:-1]:
        DeltaEvent.model_validate(event)
    DoneEvent.model_validate(data[-1])
