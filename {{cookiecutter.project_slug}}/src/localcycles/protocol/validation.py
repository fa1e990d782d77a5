"""Request-body validation against the protocol schemas (additionalProperties: false).

Every check raises ``LedgerError`` 400 INVALID_REQUEST, so no malformed input reaches the
ledger and none can turn into a 500. Limits are the spec's (and runcycles' models').
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MAX_INT64, invalid
from .scopes import LEVELS, VALUE_PATTERN

UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")
POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")
DEFAULT_TTL_MS = 60_000
DEFAULT_GRACE_MS = 5_000
MAX_TTL_MS = 86_400_000
MAX_GRACE_MS = 60_000

Body = dict[str, Any]

#: Deeper JSON than any request needs; also keeps hashing and storing far from Python's
#: recursion limit.
MAX_DEPTH = 32
# A JSON escape of a UTF-16 surrogate; raw UTF-8 cannot carry one, so only escapes can.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]", re.ASCII)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes) -> Any:
    """Parse a JSON document, or 400 for anything a later step could not store or encode.

    Refused: invalid UTF-8 or JSON, NaN/Infinity, nesting deeper than ``MAX_DEPTH`` and lone
    surrogates (``"\\ud800"``: such a string cannot be encoded as UTF-8, so SQLite and the
    response encoder would fail on it).
    """
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("request body is not valid JSON") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(raw):
        _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise invalid(f"JSON nesting deeper than {MAX_DEPTH} levels")
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((child, depth + 1))


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("strings must not contain lone UTF-16 surrogates") from None


def parse_json(body: bytes) -> Body:
    """The body as a JSON object, or 400 (never a 500) for anything else."""
    value = loads(body)
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    return value


@dataclass(frozen=True)
class Amount:
    unit: str
    amount: int

    def wire(self) -> dict[str, Any]:
        return {"unit": self.unit, "amount": self.amount}


@dataclass(frozen=True)
class ReserveRequest:
    idempotency_key: str
    subject: Body
    action: Body
    estimate: Amount
    ttl_ms: int
    grace_period_ms: int
    overage_policy: str
    dry_run: bool
    metadata: Body | None


@dataclass(frozen=True)
class CommitRequest:
    idempotency_key: str
    actual: Amount
    metrics: Body | None
    metadata: Body | None


@dataclass(frozen=True)
class EventRequest:
    idempotency_key: str
    subject: Body
    action: Body
    actual: Amount
    overage_policy: str
    metrics: Body | None
    metadata: Body | None


def as_object(value: object, where: str) -> Body:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be a JSON object")
    return value


def check_keys(
    body: Mapping[str, Any], allowed: Collection[str], required: Collection[str], where: str
) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = [key for key in required if key not in body]
    if missing:
        raise invalid(f"{where}: missing required field(s) {', '.join(missing)}")


def string(
    body: Mapping[str, Any],
    key: str,
    max_len: int,
    *,
    where: str,
    required: bool = False,
    min_len: int = 1,
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise invalid(f"{where}.{key} must be a string of {min_len}..{max_len} characters")
    return value


def integer(
    body: Mapping[str, Any], key: str, lo: int, hi: int, *, where: str, default: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    # bool is an int subclass in Python; JSON true is not an integer.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(f"{where}.{key} must be an integer in [{lo}, {hi}]")
    return value


def choice(
    body: Mapping[str, Any], key: str, values: Collection[str], *, where: str, default: str
) -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in values:
        raise invalid(f"{where}.{key} must be one of {', '.join(values)}")
    return value


def optional_object(body: Mapping[str, Any], key: str, *, where: str) -> Body | None:
    value = body.get(key)
    if value is None:
        return None
    return as_object(value, f"{where}.{key}")


def amount(value: object, where: str) -> Amount:
    obj = as_object(value, where)
    check_keys(obj, ("unit", "amount"), ("unit", "amount"), where)
    unit = obj["unit"]
    if not isinstance(unit, str) or unit not in UNITS:
        raise invalid(f"{where}.unit must be one of {', '.join(UNITS)}")
    number = integer(obj, "amount", 0, MAX_INT64, where=where)
    if number is None:
        raise invalid(f"{where}.amount must be an integer in [0, {MAX_INT64}]")
    return Amount(unit, number)


def subject(value: object) -> Body:
    obj = as_object(value, "subject")
    check_keys(obj, (*LEVELS, "dimensions"), (), "subject")
    out: Body = {}
    for level in LEVELS:
        text = string(obj, level, 128, where="subject")
        if text is not None:
            if not VALUE_PATTERN.match(text):
                raise invalid(f"subject.{level} must match ^[a-zA-Z0-9_.-]+$")
            out[level] = text
    if not out:
        raise invalid(
            "subject must have at least one standard field "
            "(tenant, workspace, app, workflow, agent or toolset)"
        )
    dims = obj.get("dimensions")
    if dims is not None:
        dims = as_object(dims, "subject.dimensions")
        if len(dims) > 16:
            raise invalid("subject.dimensions may have at most 16 entries")
        for key, item in dims.items():
            if len(key) > 256 or not isinstance(item, str) or len(item) > 256:
                raise invalid("subject.dimensions values must be strings of at most 256 chars")
        out["dimensions"] = dims
    return out


def action(value: object) -> Body:
    obj = as_object(value, "action")
    check_keys(obj, ("kind", "name", "tags"), ("kind", "name"), "action")
    out: Body = {
        "kind": string(obj, "kind", 64, where="action", required=True),
        "name": string(obj, "name", 256, where="action", required=True),
    }
    tags = obj.get("tags")
    if tags is not None:
        if (
            not isinstance(tags, list)
            or len(tags) > 10
            or not all(isinstance(tag, str) and len(tag) <= 64 for tag in tags)
        ):
            raise invalid("action.tags must be a list of at most 10 strings of at most 64 chars")
        out["tags"] = tags
    return out


def metrics(body: Mapping[str, Any], where: str) -> Body | None:
    obj = optional_object(body, "metrics", where=where)
    if obj is None:
        return None
    allowed = ("tokens_input", "tokens_output", "latency_ms", "model_version", "custom")
    check_keys(obj, allowed, (), f"{where}.metrics")
    for key in ("tokens_input", "tokens_output", "latency_ms"):
        integer(obj, key, 0, MAX_INT64, where=f"{where}.metrics")
    string(obj, "model_version", 128, where=f"{where}.metrics")
    optional_object(obj, "custom", where=f"{where}.metrics")
    return obj


def idempotency_key(body: Mapping[str, Any], where: str) -> str:
    key = string(body, "idempotency_key", 256, where=where, required=True)
    assert key is not None
    return key


def reservation(body: Body) -> ReserveRequest:
    where = "reservation"
    allowed = (
        "idempotency_key",
        "subject",
        "action",
        "estimate",
        "ttl_ms",
        "grace_period_ms",
        "overage_policy",
        "dry_run",
        "metadata",
    )
    check_keys(body, allowed, ("idempotency_key", "subject", "action", "estimate"), where)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise invalid("dry_run must be a boolean")
    ttl = integer(body, "ttl_ms", 1000, MAX_TTL_MS, where=where, default=DEFAULT_TTL_MS)
    grace = integer(body, "grace_period_ms", 0, MAX_GRACE_MS, where=where, default=DEFAULT_GRACE_MS)
    assert ttl is not None and grace is not None
    return ReserveRequest(
        idempotency_key=idempotency_key(body, where),
        subject=subject(body["subject"]),
        action=action(body["action"]),
        estimate=amount(body["estimate"], "estimate"),
        ttl_ms=ttl,
        grace_period_ms=grace,
        overage_policy=choice(
            body, "overage_policy", POLICIES, where=where, default="ALLOW_IF_AVAILABLE"
        ),
        dry_run=dry_run,
        metadata=optional_object(body, "metadata", where=where),
    )


def decision(body: Body) -> ReserveRequest:
    """A decide request is a reservation without lease fields; reuse the same shape."""
    where = "decision"
    allowed = ("idempotency_key", "subject", "action", "estimate", "metadata")
    check_keys(body, allowed, ("idempotency_key", "subject", "action", "estimate"), where)
    return ReserveRequest(
        idempotency_key=idempotency_key(body, where),
        subject=subject(body["subject"]),
        action=action(body["action"]),
        estimate=amount(body["estimate"], "estimate"),
        ttl_ms=DEFAULT_TTL_MS,
        grace_period_ms=DEFAULT_GRACE_MS,
        overage_policy="ALLOW_IF_AVAILABLE",
        dry_run=True,
        metadata=optional_object(body, "metadata", where=where),
    )


def commit(body: Body) -> CommitRequest:
    where = "commit"
    check_keys(
        body,
        ("idempotency_key", "actual", "metrics", "metadata"),
        ("idempotency_key", "actual"),
        where,
    )
    return CommitRequest(
        idempotency_key=idempotency_key(body, where),
        actual=amount(body["actual"], "actual"),
        metrics=metrics(body, where),
        metadata=optional_object(body, "metadata", where=where),
    )


def release(body: Body) -> tuple[str, str | None]:
    where = "release"
    check_keys(body, ("idempotency_key", "reason"), ("idempotency_key",), where)
    return idempotency_key(body, where), string(body, "reason", 256, where=where)


def extend(body: Body) -> tuple[str, int]:
    where = "extend"
    check_keys(
        body,
        ("idempotency_key", "extend_by_ms", "metadata"),
        ("idempotency_key", "extend_by_ms"),
        where,
    )
    optional_object(body, "metadata", where=where)
    by = integer(body, "extend_by_ms", 1, MAX_TTL_MS, where=where)
    if by is None:
        raise invalid("extend.extend_by_ms is required")
    return idempotency_key(body, where), by


def event(body: Body) -> EventRequest:
    where = "event"
    allowed = (
        "idempotency_key",
        "subject",
        "action",
        "actual",
        "overage_policy",
        "metrics",
        "client_time_ms",
        "metadata",
    )
    check_keys(body, allowed, ("idempotency_key", "subject", "action", "actual"), where)
    integer(body, "client_time_ms", 0, MAX_INT64, where=where)
    return EventRequest(
        idempotency_key=idempotency_key(body, where),
        subject=subject(body["subject"]),
        action=action(body["action"]),
        actual=amount(body["actual"], "actual"),
        overage_policy=choice(
            body, "overage_policy", POLICIES, where=where, default="ALLOW_IF_AVAILABLE"
        ),
        metrics=metrics(body, where),
        metadata=optional_object(body, "metadata", where=where),
    )


def caps(value: object) -> Body | None:
    """Operator-configured caps (a local extension on budgets) in the protocol's Caps shape."""
    if value is None:
        return None
    obj = as_object(value, "caps")
    allowed = (
        "max_tokens",
        "max_steps_remaining",
        "tool_allowlist",
        "tool_denylist",
        "cooldown_ms",
    )
    check_keys(obj, allowed, (), "caps")
    out: Body = {}
    for key in ("max_tokens", "max_steps_remaining", "cooldown_ms"):
        number = integer(obj, key, 0, MAX_INT64, where="caps")
        if number is not None:
            out[key] = number
    for key in ("tool_allowlist", "tool_denylist"):
        items = obj.get(key)
        if items is None:
            continue
        if not isinstance(items, list) or not all(
            isinstance(item, str) and len(item) <= 256 for item in items
        ):
            raise invalid(f"caps.{key} must be a list of strings")
        out[key] = items
    return out or None
