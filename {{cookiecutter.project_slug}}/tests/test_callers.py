"""Who is calling: a known tenant, or 401; there is no default tenant."""

from __future__ import annotations
{% if cookiecutter.tenant_auth == "api_key" %}
import hmac
{% endif %}
import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from conftest import assert_error, auth_headers
from {{ cookiecutter.package_name }} import callers
from {{ cookiecutter.package_name }}.errors import ApiError

BODY = {"prompt": "hello"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
{%- if cookiecutter.tenant_auth == "api_key" %}
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic Y2FsbGVyLWtleS1hY21lOg=="},
        {"Authorization": "caller-key-acme"},
        # The hash of a key is not the key.
        {"Authorization": "Bearer " + "0" * 64},
        {"X-Tenant-ID": "acme"},
{%- else %}
        {"X-Tenant-ID": ""},
        {"X-Tenant-ID": "initech"},
        {"X-Tenant-ID": "ACME"},
        {"X-Tenant-ID": "acme/../globex"},
        {"Authorization": "Bearer caller-key-acme"},
{%- endif %}
    ],
)
def test_unknown_callers_are_401(client: FlaskClient, headers: dict[str, str]) -> None:
    for response in (
        client.post("/chat", json=BODY, headers=headers),
        client.post("/summarize", json={"text": "t"}, headers=headers),
        client.get("/budget", headers=headers),
    ):
        assert_error(response, 401, "unauthorized")
{%- if cookiecutter.tenant_auth == "api_key" %}


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "Send your API key"),
        ({"Authorization": "Bearer "}, "Send your API key"),
        ({"Authorization": "Basic Y2FsbGVyLWtleS1hY21lOg=="}, "Send your API key"),
        ({"Authorization": "Bearer not-a-key"}, "not valid"),
    ],
)
def test_a_missing_key_and_a_wrong_key_are_told_apart(
    client: FlaskClient, headers: dict[str, str], says: str
) -> None:
    body = assert_error(client.get("/budget", headers=headers), 401, "unauthorized")
    assert says in body["message"]
{%- endif %}


def test_callers_are_checked_before_their_bodies(client: FlaskClient) -> None:
    response = client.post("/chat", data="not json", headers={"Content-Type": "text/plain"})
    assert_error(response, 401, "unauthorized")


def test_health_needs_no_caller(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_the_resolved_tenant_is_in_g(app: Flask, tenant: str) -> None:
    with app.test_request_context("/budget", headers=auth_headers(tenant)):
        callers.authenticate()
        assert g.tenant == tenant == callers.current_tenant()


def test_resolution_raises_api_error(app: Flask) -> None:
    with app.test_request_context("/budget"), pytest.raises(ApiError) as raised:
        callers.authenticate()
    assert raised.value.status == 401
{%- if cookiecutter.tenant_auth == "api_key" %}


def test_a_key_is_compared_in_constant_time_with_every_known_digest(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behaviour cannot show constant time; the comparisons made can. Every known digest is
    # compared (no early exit on a match), each with hmac.compare_digest.
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(known: str, presented: str) -> bool:
        compared.append((known, presented))
        return real(known, presented)

    monkeypatch.setattr(callers.hmac, "compare_digest", spy)
    known = set(app.extensions["settings"].tenant_key_hashes)
    for headers in (auth_headers("acme"), {"Authorization": "Bearer not-a-key"}):
        compared.clear()
        client.get("/budget", headers=headers)
        assert {digest for digest, _ in compared} == known
        assert len(compared) == len(known)
        assert all(len(presented) == 64 for _, presented in compared)
{%- endif %}
