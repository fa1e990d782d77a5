"""Who is calling: a known tenant, or 401; there is no default tenant.

What a caller must send depends on the project's answer: test_callers_api_key.py or
test_callers_trusted_header.py.
"""

from __future__ import annotations

import pytest
from flask import Flask, g
from flask.testing import FlaskClient

from conftest import assert_error, auth_headers
from {{ cookiecutter.package_name }} import callers
from {{ cookiecutter.package_name }}.errors import ApiError
from support.caller_checks import assert_refused_everywhere


def test_a_caller_that_names_no_tenant_is_401(client: FlaskClient) -> None:
    assert_refused_everywhere(client, {})


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
