"""Query-string parsing for the list endpoints (GET /v1/reservations, GET /v1/balances)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .errors import LedgerError, invalid
from .scopes import LEVELS
from .validation import loads
from .wire import parse_iso_ms

SORT_COLUMNS = {
    "reservation_id": "reservation_id",
    "tenant": "tenant_id",
    "scope_path": "scope_path",
    "status": "status",
    "reserved": "amount",
    "created_at_ms": "created_at_ms",
    "expires_at_ms": "expires_at_ms",
}
STATUSES = ("ACTIVE", "COMMITTED", "RELEASED", "EXPIRED")
#: Cursors this server issues are shorter (a scope path is the longest sort value they
#: carry); anything longer is not one of them.
MAX_CURSOR = 4096
#: Sort columns whose values are integers (the others are text).
NUMERIC_SORT_COLUMNS = frozenset({"amount", "created_at_ms", "expires_at_ms"})
#: Window filters: query names -> column they bind to.
WINDOWS = (
    ("from", "to", "created_at_ms"),
    ("expires_from", "expires_to", "expires_at_ms"),
    ("finalized_from", "finalized_to", "finalized_at_ms"),
)


@dataclass(frozen=True)
class ListQuery:
    where: list[tuple[str, Any]]
    order_by: str
    descending: bool
    after: tuple[Any, str] | None  # the (sort value, reservation id) a page starts after
    limit: int
    fingerprint: str

    def cursor(self, last: tuple[Any, str]) -> str:
        """The cursor of the page after the one whose last row is ``last``."""
        return encode_cursor({"f": self.fingerprint, "v": last[0], "id": last[1]})


def limit(params: dict[str, str]) -> int:
    raw = params.get("limit", "")
    if raw == "":
        return 50
    # isdigit() alone accepts digits int() refuses ("²") and numbers too long to convert.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= 200:
        raise invalid("limit must be an integer in [1, 200]")
    return int(raw)


def subject_filters(params: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for level in LEVELS:
        value = params.get(level)
        if value:
            if len(value) > 128:
                raise invalid(f"{level} must be at most 128 characters")
            out[level] = value
    return out


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """A cursor this server issued, decoded; 400 for anything else (forged or damaged)."""
    try:
        if len(cursor) > MAX_CURSOR or not cursor.isascii():
            raise ValueError(cursor)
        value = loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, LedgerError):
        raise invalid("cursor is not valid") from None
    if not isinstance(value, dict):
        raise invalid("cursor is not valid")
    return value


def balance_cursor(cursor: str | None) -> tuple[str, str] | None:
    """The keyset position a GET /v1/balances cursor carries."""
    if not cursor:
        return None
    position = decode_cursor(cursor).get("after")
    if not (
        isinstance(position, list)
        and len(position) == 2
        and all(isinstance(p, str) and len(p) <= 1024 for p in position)
    ):
        raise invalid("cursor is not valid")
    return position[0], position[1]


def reservations(params: dict[str, str]) -> ListQuery:
    """Filters, sort and keyset cursor for GET /v1/reservations."""
    where: list[tuple[str, Any]] = []
    key = params.get("idempotency_key")
    if key:
        where.append(("idempotency_key = ?", key))
    status = params.get("status")
    if status:
        if status not in STATUSES:
            raise invalid(f"status must be one of {', '.join(STATUSES)}")
        where.append(("status = ?", status))
    for level, value in subject_filters(params).items():
        if level != "tenant":
            where.append(("instr('/' || scope_path || '/', ?) > 0", f"/{level}:{value.lower()}/"))
    for low_name, high_name, column in WINDOWS:
        low, high = _instant(params, low_name), _instant(params, high_name)
        if low is not None and high is not None and low > high:
            raise invalid(f"{low_name} must not be after {high_name}")
        if low is not None:
            where.append((f"{column} >= ?", low))
        if high is not None:
            where.append((f"{column} <= ?", high))
    sort_by = params.get("sort_by") or "created_at_ms"
    order_by = SORT_COLUMNS.get(sort_by, "created_at_ms")  # unknown keys are ignored
    descending = params.get("sort_dir", "desc") != "asc"
    fingerprint = hashlib.sha256(
        json.dumps([where, order_by, descending], default=str).encode()
    ).hexdigest()[:16]
    after = None
    cursor = params.get("cursor")
    if cursor:
        after = _position(decode_cursor(cursor), fingerprint, order_by)
    return ListQuery(where, order_by, descending, after, limit(params), fingerprint)


def _position(state: dict[str, Any], fingerprint: str, order_by: str) -> tuple[Any, str]:
    """The (sort value, reservation id) a reservation cursor of this query carries."""
    value, last_id = state.get("v"), state.get("id")
    numeric = order_by in NUMERIC_SORT_COLUMNS
    fits = (
        type(value) is int and -(2**63) <= value < 2**63
        if numeric
        else isinstance(value, str) and len(value) <= MAX_CURSOR
    )
    if state.get("f") != fingerprint or not fits or not isinstance(last_id, str):
        raise invalid("cursor does not match this query")
    return value, last_id


def _instant(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:  # blank bounds are unset, by the spec
        return None
    try:
        return parse_iso_ms(raw)
    except (ValueError, OverflowError, OSError):
        raise invalid(f"{name} must be an ISO 8601 date-time") from None
