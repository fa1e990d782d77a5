"""Every error leaves the app as JSON ``{error, message[, retry_after_ms]}``.

``error`` is a stable machine-readable code; ``message`` is for humans. Never an HTML page,
never a traceback, never the string "None". An error may add fields of its own
(``details``: a budget denial names the estimate, what remains and how to get more).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from .llm import ProviderError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports on purpose, with its HTTP status and stable code."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        retry_after_ms: int | None = None,
        details: Mapping[str, str | int] | None = None,
        facts: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.retry_after_ms = retry_after_ms
        # More fields of the JSON body (never None values: a field unknown is left out).
        self.details: Mapping[str, str | int] = details or {}
        # What the code that raised it learnt, for the code that handles it: never sent
        # (a budget denial carries the balances read to explain it, so fit-to-budget
        # does not read them again).
        self.facts: Mapping[str, object] = facts or {}

    def with_retry_after(self, retry_after_ms: int | None) -> ApiError:
        """The same answer (details too) with another ``retry_after_ms``."""
        return ApiError(
            self.status, self.error, self.message, retry_after_ms, self.details, self.facts
        )

    def with_details(self, **details: str | int) -> ApiError:
        """The same answer with more fields in its body."""
        merged = {**self.details, **details}
        return ApiError(
            self.status, self.error, self.message, self.retry_after_ms, merged, self.facts
        )

    def with_facts(self, **facts: object) -> ApiError:
        """The same answer, carrying more of what was learnt (never in its body)."""
        merged = {**self.facts, **facts}
        return ApiError(
            self.status, self.error, self.message, self.retry_after_ms, self.details, merged
        )


def error_response(
    status: int,
    error: str,
    message: str,
    retry_after_ms: int | None = None,
    details: Mapping[str, str | int] | None = None,
) -> Response:
    body: dict[str, object] = {"error": error, "message": message, **(details or {})}
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
    response = jsonify(body)
    response.status_code = status
    if retry_after_ms is not None:
        # Retry-After is in whole seconds; round up so clients never retry too early.
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_ms / 1000)))
    return response


def _http_error_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.error, exc.message, exc.retry_after_ms, exc.details)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(status, _http_error_code(exc), exc.description or exc.name)
        if "Allow" in (allowed := dict(exc.get_headers())):
            response.headers["Allow"] = allowed["Allow"]  # a 405 names the methods (RFC 9110)
        return response

    @app.errorhandler(ProviderError)
    def handle_provider_error(exc: ProviderError) -> Response:
        # The vendor's text may quote the prompt or account details: log it, answer plainly.
        log.warning("LLM provider failed: %s", exc)
        return error_response(502, "provider_error", "The language model provider failed.")

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)  # with its traceback, in the log only
        return error_response(500, "internal_error", "The server failed to handle the request.")
