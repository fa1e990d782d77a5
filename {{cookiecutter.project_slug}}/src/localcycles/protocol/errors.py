"""Protocol errors: one exception type that the HTTP layer turns into an error body."""

from __future__ import annotations

from typing import Any

#: Largest value an int64 amount may take (the spec's ``format: int64``).
MAX_INT64 = 9_223_372_036_854_775_807


class LedgerError(Exception):
    """A protocol error with its HTTP status and stable ``error`` code.

    Not runcycles' ``CyclesError`` (what the client raises): this is what the server answers.

    Raised anywhere below the HTTP layer; the server renders it as
    ``{error, message, request_id, trace_id[, details]}``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def invalid(message: str, details: dict[str, Any] | None = None) -> LedgerError:
    """400 INVALID_REQUEST: the request itself is malformed."""
    return LedgerError(400, "INVALID_REQUEST", message, details)


def not_found(message: str) -> LedgerError:
    return LedgerError(404, "NOT_FOUND", message)


def forbidden(message: str) -> LedgerError:
    return LedgerError(403, "FORBIDDEN", message)


def unauthorized(message: str) -> LedgerError:
    return LedgerError(401, "UNAUTHORIZED", message)


def expired() -> LedgerError:
    return LedgerError(410, "RESERVATION_EXPIRED", "Reservation has expired")


def conflict(code: str, message: str, details: dict[str, Any] | None = None) -> LedgerError:
    """409: the request is valid but the ledger state refuses it."""
    return LedgerError(409, code, message, details)
