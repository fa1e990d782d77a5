"""What a Cycles failure means for the caller: the one place Cycles errors are classified.

Budget denials become 402, rate limits 429, and anything that leaves the app without a
trustworthy answer (no connection, a 5xx, a rejected key, a malformed reply) 503. Whether
``CYCLES_FAIL_OPEN`` may serve a request anyway is decided here too, by
:func:`may_fail_open`: only when Cycles gave no answer at all, never on a denial.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response
from runcycles import CyclesError, CyclesProtocolError, CyclesResponse

from ..config import ConfigError
from ..errors import ApiError, error_response

log = logging.getLogger(__name__)

# Cycles denial codes -> (HTTP status, the app's stable error code, message).
_DENIALS: Mapping[str, tuple[int, str, str]] = {
    "BUDGET_EXCEEDED": (402, "budget_exceeded", "The budget cannot cover this request."),
    "DEBT_OUTSTANDING": (
        402,
        "debt_outstanding",
        "The budget has outstanding debt; it must be repaid before new requests.",
    ),
    "OVERDRAFT_LIMIT_EXCEEDED": (
        402,
        "overdraft_limit_exceeded",
        "The budget is over its overdraft limit.",
    ),
    "TENANT_CLOSED": (403, "tenant_closed", "The tenant's budget account is closed."),
    "BUDGET_NOT_FOUND": (503, "budget_not_configured", "No budget is set up for this tenant."),
    "NOT_FOUND": (503, "budget_not_configured", "No budget is set up for this tenant."),
}
_DENIED = (402, "budget_denied", "The budget service denied this request.")
_UNAVAILABLE = (503, "cycles_unavailable", "The budget service is unavailable; try again later.")
# A 2xx whose body is not what the protocol promises (not JSON, another shape): as good as
# no answer (so CYCLES_FAIL_OPEN may serve past it), but named for what it is.
_MALFORMED = (
    503,
    "cycles_unavailable",
    "The budget service is not answering properly; try again later.",
)
_REJECTED_KEY = (503, "cycles_misconfigured", "The budget service is misconfigured.")
_RATE_LIMITED = (429, "rate_limited", "Too many requests to the budget service; slow down.")
_REFUSED = (503, "cycles_error", "The budget service refused the request.")

UNAVAILABLE = _UNAVAILABLE[1]


def is_unavailable(status: int) -> bool:
    """No answer (transport failure, timeout: status <= 0) or a server-side failure."""
    return status <= 0 or status >= 500


def may_fail_open(error: ApiError) -> bool:
    """``CYCLES_FAIL_OPEN`` serves only when Cycles could not answer, never past a denial."""
    return error.error == UNAVAILABLE


def is_budget_denial(error: ApiError) -> bool:
    """A refusal the deny cache may remember: the budget said no (402)."""
    return error.status == 402


def denial(reason_code: str | None, retry_after_ms: int | None) -> ApiError:
    """The answer to a Cycles ``DENY`` decision carrying ``reason_code``."""
    return _api_error(_DENIALS.get(reason_code or "", _DENIED), retry_after_ms)


def classify(status: int, code: str | None, retry_after_ms: int | None) -> ApiError:
    """The app's answer to a Cycles failure: never the upstream detail or the key."""
    known = _DENIALS.get(code or "")
    if known is not None:
        return _api_error(known, retry_after_ms)
    if status == 429 or code == "LIMIT_EXCEEDED":
        return _api_error(_RATE_LIMITED, retry_after_ms)
    if is_unavailable(status):
        return _api_error(_UNAVAILABLE, retry_after_ms)
    if status in (401, 403):
        # Cycles rejected the app's own key: an operator problem, not the caller's.
        return _api_error(_REJECTED_KEY)
    return _api_error(_REFUSED)


def malformed() -> ApiError:
    """The answer to a 2xx from Cycles that lacks what the protocol promises."""
    return _api_error(_MALFORMED)


def error_code(response: CyclesResponse) -> str | None:
    """The protocol error code of a failed Cycles response, if it sent one."""
    body = response.body if isinstance(response.body, dict) else {}
    code = body.get("error")
    return code if isinstance(code, str) else None


def from_response(response: CyclesResponse, operation: str) -> ApiError:
    """Classify a Cycles response that did not give the app what it asked for."""
    body = response.body if isinstance(response.body, dict) else {}
    retry_after = non_negative_int(body.get("retry_after_ms"))
    if retry_after is None:
        retry_after = response.retry_after_ms_header
    if response.is_success:
        error = malformed()
    else:
        error = classify(response.status, error_code(response), retry_after)
    log_failure(operation, response.status, error_code(response), error)
    return error


def non_negative_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def log_failure(operation: str, status: int, code: str | None, error: ApiError) -> None:
    level = logging.WARNING if error.status >= 500 else logging.INFO
    log.log(level, "Cycles %s failed: HTTP %s %s -> %s", operation, status, code, error.error)


def init_app(app: Flask) -> None:
    """Answer any runcycles exception that escapes a view as the app's JSON error."""

    @app.errorhandler(CyclesError)
    def handle_cycles_error(exc: CyclesError) -> Response:
        if isinstance(exc, CyclesProtocolError):
            status, code, retry = exc.status, exc.error_code, exc.retry_after_ms
        else:
            status, code, retry = -1, None, None
        error = classify(status, code, retry)
        log_failure("call", status, code, error)
        return error_response(error.status, error.error, error.message, error.retry_after_ms)

    @app.errorhandler(ConfigError)
    def handle_unusable_cycles(exc: ConfigError) -> Response:
        # Raised when the embedded ledger cannot start on first use (e.g. a busy port):
        # the operator's problem, named in the log; the caller gets a plain 503.
        log.error("Cycles cannot be reached as configured: %s", exc)
        error = _api_error(_REJECTED_KEY)
        return error_response(error.status, error.error, error.message)


def _api_error(kind: tuple[int, str, str], retry_after_ms: int | None = None) -> ApiError:
    status, code, message = kind
    return ApiError(status, code, message, retry_after_ms)
