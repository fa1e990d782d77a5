"""Every error leaves the app as JSON ``{error, message[, retry_after_ms]}``, never a page.

The handlers are installed on a bare Flask app here, with routes that fail on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import assert_error
from {{ cookiecutter.package_name }} import errors
from {{ cookiecutter.package_name }}.errors import ApiError
from {{ cookiecutter.package_name }}.llm import ProviderError

VENDOR_TEXT = "account acct_42 over quota; prompt was 'secret plans'"


@pytest.fixture
def responses_match_the_document() -> list[str]:
    """Overrides the suite's check (support/openapi_contract.py): a bare app has no document."""
    return []


@pytest.fixture
def failing() -> Iterator[FlaskClient]:
    app = Flask(__name__)
    errors.init_app(app)

    @app.get("/api-error")
    def api_error() -> None:
        raise ApiError(409, "conflict_here", "Try another one.")

    @app.get("/rate-limited/<int:retry_after_ms>")
    def rate_limited(retry_after_ms: int) -> None:
        raise ApiError(429, "rate_limited", "Slow down.", retry_after_ms=retry_after_ms)

    @app.get("/with-details")
    def with_details() -> None:
        denial = ApiError(402, "budget_exceeded", "No budget.", 900, {"estimate_usd": "0.01"})
        raise denial.with_retry_after(1500).with_details(remaining_usd="0.00")

    @app.get("/provider-error")
    def provider_error() -> None:
        raise ProviderError(VENDOR_TEXT)

    @app.get("/unexpected")
    def unexpected() -> None:
        raise RuntimeError("internal detail")

    yield app.test_client()


def test_an_api_error_keeps_its_status_code_and_message(failing: FlaskClient) -> None:
    body = assert_error(failing.get("/api-error"), 409, "conflict_here")
    assert body["message"] == "Try another one."


@pytest.mark.parametrize(("retry_after_ms", "header"), [(1, "1"), (1000, "1"), (1001, "2")])
def test_retry_after_is_whole_seconds_rounded_up(
    failing: FlaskClient, retry_after_ms: int, header: str
) -> None:
    response = failing.get(f"/rate-limited/{retry_after_ms}")
    body = assert_error(response, 429, "rate_limited")
    assert body["retry_after_ms"] == retry_after_ms
    assert response.headers["Retry-After"] == header


def test_an_unknown_route_and_a_wrong_method_are_json(failing: FlaskClient) -> None:
    assert_error(failing.get("/no-such-route"), 404, "not_found")
    response = failing.delete("/api-error")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_a_provider_failure_is_502_and_only_the_log_has_the_vendors_words(
    failing: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        response = failing.get("/provider-error")
    body = assert_error(response, 502, "provider_error")
    assert body["message"] == "The language model provider failed."
    assert "secret plans" not in response.get_data(as_text=True)
    assert any(VENDOR_TEXT in record.getMessage() for record in caplog.records)


def test_an_unexpected_error_is_500_without_a_traceback(
    failing: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = failing.get("/unexpected")
    assert_error(response, 500, "internal_error")
    assert "internal detail" not in response.get_data(as_text=True)
    (logged,) = [r for r in caplog.records if r.name == errors.log.name]
    assert logged.exc_info is not None  # the log keeps the traceback
    assert "internal detail" in caplog.text


def test_an_error_adds_its_details_to_the_body(failing: FlaskClient) -> None:
    response = failing.get("/with-details")
    assert response.get_json() == {
        "error": "budget_exceeded",
        "message": "No budget.",
        "retry_after_ms": 1500,
        "estimate_usd": "0.01",
        "remaining_usd": "0.00",
    }
    assert response.headers["Retry-After"] == "2"
