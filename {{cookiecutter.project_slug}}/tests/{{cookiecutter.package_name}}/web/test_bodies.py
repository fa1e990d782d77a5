"""Request bodies: malformed 400, too large 413, not JSON 415; checked before Cycles is asked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import (
    MAX_PROMPT_CHARS,
    MAX_TOKENS_LIMIT,
    Provisioner,
    assert_error,
    auth_headers,
)
from {{ cookiecutter.package_name }}.web.bodies import max_body_bytes

JSON = {"Content-Type": "application/json", **auth_headers("acme")}


@pytest.mark.parametrize(
    ("route", "data", "error"),
    [
        ("/chat", "{not json", "invalid_json"),
        ("/chat", b"\xff\xfe", "invalid_json"),
        ("/chat", "", "invalid_json"),
        # Nested deeper than Python's stack: a RecursionError inside the parser.
        ("/chat", "[" * 5_000 + "]" * 5_000, "invalid_json"),
        ("/summarize", '{"text": ' * 2_000 + "1" + "}" * 2_000, "invalid_json"),
        ("/chat", "[]", "invalid_request"),
        ("/chat", '"a prompt"', "invalid_request"),
        ("/chat", "{}", "invalid_request"),
        ("/chat", '{"prompt": 42}', "invalid_request"),
        ("/chat", '{"prompt": "   "}', "invalid_request"),
        ("/chat", '{"prompt": "\\t\\u3000\\ufeff\\u2028"}', "invalid_request"),
        ("/chat", '{"prompt": "\\ud800 lone surrogate"}', "invalid_request"),
        ("/summarize", '{"text": "a\\udfff"}', "invalid_request"),
        ("/chat", '{"prompt": null}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "max_tokens": "10"}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "max_tokens": 1.5}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "max_tokens": true}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "max_tokens": 0}', "invalid_request"),
        (
            "/chat",
            json.dumps({"prompt": "hi", "max_tokens": MAX_TOKENS_LIMIT + 1}),
            "invalid_request",
        ),
        ("/chat", '{"prompt": "hi", "max_token": 5}', "invalid_request"),
        ("/summarize", '{"prompt": "hi"}', "invalid_request"),
        ("/summarize", '{"text": ["a"]}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "max_tokens": null}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "stream": "yes"}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "stream": 1}', "invalid_request"),
        ("/chat", '{"prompt": "hi", "stream": null}', "invalid_request"),
        ("/summarize", '{"text": "hi", "stream": true}', "invalid_request"),
    ],
)
def test_bad_bodies_are_400(
    client: FlaskClient, provisioner: Provisioner, route: str, data: Any, error: str
) -> None:
    before = provisioner.balance("acme")
    assert_error(client.post(route, data=data, headers=JSON), 400, error)
    assert provisioner.balance("acme") == before


@pytest.mark.parametrize("limit", [1, MAX_TOKENS_LIMIT, 5.0])
def test_max_tokens_bounds_are_accepted(client: FlaskClient, limit: float) -> None:
    # 5.0 is the number 5 in JSON (and in the API document's "integer").
    response = client.post("/chat", json={"prompt": "hi", "max_tokens": limit}, headers=JSON)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["max_tokens"] == limit


def test_oversized_prompt_and_text_are_413(client: FlaskClient) -> None:
    long = "x" * (MAX_PROMPT_CHARS + 1)
    assert_error(client.post("/chat", json={"prompt": long}, headers=JSON), 413, "prompt_too_large")
    assert_error(
        client.post("/summarize", json={"text": long}, headers=JSON), 413, "prompt_too_large"
    )
    at_limit = client.post("/chat", json={"prompt": "x" * MAX_PROMPT_CHARS}, headers=JSON)
    assert at_limit.status_code == 200


def test_oversized_body_is_413(app: Flask, client: FlaskClient) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == max_body_bytes(app.extensions["settings"])
    body = '{"prompt": "hi", "pad": "' + "x" * limit + '"}'
    assert_error(client.post("/chat", data=body, headers=JSON), 413, "body_too_large")


def test_the_longest_prompt_fits_in_the_body_limit(client: FlaskClient) -> None:
    # Every character escaped as a surrogate pair: the worst case for the body size.
    body = '{"prompt": "' + "\\ud83d\\ude00" * MAX_PROMPT_CHARS + '", "max_tokens": 1}'
    response = client.post("/chat", data=body, headers=JSON)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    headers = auth_headers("acme")
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/chat", data='{"prompt": "hi"}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_routes_and_methods_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/chat", headers=auth_headers("acme")), 405, "method_not_allowed")
    assert_error(client.post("/nope", json={}), 404, "not_found")
