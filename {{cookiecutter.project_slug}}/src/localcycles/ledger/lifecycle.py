"""The reservation lifecycle: reserve, decide, commit, release, extend, and events.

Each operation is one ``BEGIN IMMEDIATE`` transaction over the shared file, atomic across
every scope it touches. Requests arrive validated (``validation``); the HTTP layer has
already authenticated the tenant.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

from ..protocol import wire
from ..protocol.errors import LedgerError, conflict, expired, forbidden, not_found
from ..protocol.scopes import derive_scopes
from ..protocol.validation import Amount, CommitRequest, EventRequest, ReserveRequest
from . import balances
from .accounting import DENIAL_MESSAGES, Budget, charge_overage, checked, reserve_denial
from .db import Database
from .rows import (
    dumps,
    expire_holds,
    load_budgets,
    load_reservation,
    remember,
    replay,
    save_budgets,
)

Json = dict[str, Any]
Clock = Callable[[], int]


class ReservationLifecycle:
    """The protocol's write operations (a part of ``LocalLedger``)."""

    db: Database
    clock: Clock
    max_extensions: int
    max_reservation_ttl_ms: int

    def reserve(self, tenant: str, req: ReserveRequest, body_hash: str) -> Json:
        """POST /v1/reservations (also dry_run)."""
        _own_subject(tenant, req.subject)
        now = self.clock()
        # Everything that does not read the ledger is prepared before taking the write lock.
        scopes = derive_scopes(req.subject)
        unit, estimate = req.estimate.unit, req.estimate.amount
        reservation_id = "rsv_" + uuid.uuid4().hex
        # Capped, not refused, as the reference does with a TTL above the tenant's maximum.
        ttl_ms = min(req.ttl_ms, self.max_reservation_ttl_ms)
        expires = now + ttl_ms
        row = _reservation_row(reservation_id, tenant, req, scopes, now, expires)
        with self.db.write() as conn:
            expire_holds(conn, now)
            replayed = replay(conn, tenant, "reserve", req.idempotency_key, body_hash)
            if replayed is not None:
                return _with_ttl(conn, replayed, now, replayed.get("reservation_id"))
            budgets = load_budgets(conn, scopes, unit)
            if req.dry_run:
                result = _evaluate(conn, scopes, budgets, req.estimate, dry_run=True)
                remember(conn, tenant, "reserve", req.idempotency_key, body_hash, result, now)
                return result
            if not budgets:
                raise _missing_budget(conn, scopes, unit)
            _hold(conn, budgets, estimate, row, now)
            caps = _caps(budgets, scopes[-1])
            result = {
                "decision": "ALLOW_WITH_CAPS" if caps else "ALLOW",
                "reservation_id": reservation_id,
                "affected_scopes": scopes,
                "expires_at_ms": expires,
                "scope_path": scopes[-1],
                "reserved": req.estimate.wire(),
                "balances": [balances.balance(b) for b in budgets],
            }
            if caps:
                result["caps"] = caps
            remember(
                conn, tenant, "reserve", req.idempotency_key, body_hash, result, now, reservation_id
            )
        result["remaining_ttl_ms"] = ttl_ms
        return result

    def decide(self, tenant: str, req: ReserveRequest, body_hash: str) -> Json:
        """POST /v1/decide: the reserve evaluation without a hold; denial is a 200 DENY."""
        _own_subject(tenant, req.subject)
        now = self.clock()
        with self.db.write() as conn:
            expire_holds(conn, now)
            replayed = replay(conn, tenant, "decide", req.idempotency_key, body_hash)
            if replayed is not None:
                return replayed
            scopes = derive_scopes(req.subject)
            budgets = load_budgets(conn, scopes, req.estimate.unit)
            evaluation = _evaluate(conn, scopes, budgets, req.estimate, dry_run=False)
            remember(conn, tenant, "decide", req.idempotency_key, body_hash, evaluation, now)
        return evaluation

    def commit(
        self, tenant: str | None, reservation_id: str, req: CommitRequest, body_hash: str
    ) -> Json:
        """POST /v1/reservations/{id}/commit; keeps the metrics and metadata it carries."""
        now = self.clock()
        actual = req.actual
        with self.db.write() as conn:
            expire_holds(conn, now)
            row = load_reservation(conn, tenant, reservation_id)
            replayed = _finalized(row, "COMMITTED", req.idempotency_key, body_hash)
            if replayed is not None:
                return replayed
            _require_live(row, now)
            if actual.unit != row["unit"]:
                raise LedgerError(
                    400,
                    "UNIT_MISMATCH",
                    f"actual.unit {actual.unit} differs from reserved unit {row['unit']}",
                    {"requested_unit": actual.unit, "expected_units": [row["unit"]]},
                )
            estimate = int(row["amount"])
            budgets = load_budgets(conn, json.loads(row["budgeted_scopes"]), row["unit"])
            delta = actual.amount - estimate
            charged = actual.amount
            if delta > 0:
                if row["overage_policy"] == "REJECT":
                    raise conflict(
                        "BUDGET_EXCEEDED", "Actual exceeds estimate and overage policy is REJECT"
                    )
                charged = estimate + charge_overage(budgets, delta, row["overage_policy"])
            for budget in budgets:
                budget.reserved -= estimate
                budget.spent += min(actual.amount, estimate)
            save_budgets(conn, budgets, now)
            result: Json = {"status": "COMMITTED", "charged": wire.amount(actual.unit, charged)}
            if delta < 0:
                result["released"] = wire.amount(actual.unit, -delta)
            result["balances"] = [balances.balance(b) for b in budgets]
            conn.execute(
                "UPDATE reservations SET status = 'COMMITTED', committed = ?, finalized_at_ms = ?, "
                "final_key = ?, final_hash = ?, final_response = ?, committed_metadata = ?, "
                "committed_metrics = ? WHERE reservation_id = ?",
                (
                    charged,
                    now,
                    req.idempotency_key,
                    body_hash,
                    dumps(result),
                    dumps(req.metadata) if req.metadata is not None else None,
                    dumps(req.metrics) if req.metrics is not None else None,
                    reservation_id,
                ),
            )
        return result

    def release(self, tenant: str | None, reservation_id: str, key: str, body_hash: str) -> Json:
        """POST /v1/reservations/{id}/release (tenant None: admin on behalf of the owner)."""
        now = self.clock()
        with self.db.write() as conn:
            expire_holds(conn, now)
            row = load_reservation(conn, tenant, reservation_id)
            replayed = _finalized(row, "RELEASED", key, body_hash)
            if replayed is not None:
                return replayed
            _require_live(row, now)
            budgets = load_budgets(conn, json.loads(row["budgeted_scopes"]), row["unit"])
            for budget in budgets:
                budget.reserved -= int(row["amount"])
            save_budgets(conn, budgets, now)
            result = {
                "status": "RELEASED",
                "released": wire.amount(row["unit"], row["amount"]),
                "balances": [balances.balance(b) for b in budgets],
            }
            conn.execute(
                "UPDATE reservations SET status = 'RELEASED', finalized_at_ms = ?, final_key = ?, "
                "final_hash = ?, final_response = ? WHERE reservation_id = ?",
                (now, key, body_hash, dumps(result), reservation_id),
            )
        return result

    def extend(
        self, tenant: str, reservation_id: str, key: str, extend_by_ms: int, body_hash: str
    ) -> Json:
        """POST /v1/reservations/{id}/extend: only before expiry, at most max_extensions."""
        now = self.clock()
        endpoint = f"extend:{reservation_id}"
        with self.db.write() as conn:
            expire_holds(conn, now)
            replayed = replay(conn, tenant, endpoint, key, body_hash)
            if replayed is not None:
                return _with_ttl(conn, replayed, now, reservation_id)
            row = load_reservation(conn, tenant, reservation_id)
            if row["status"] in ("COMMITTED", "RELEASED"):
                raise conflict("RESERVATION_FINALIZED", f"Reservation is {row['status']}")
            if row["status"] == "EXPIRED" or now > row["expires_at_ms"]:
                raise expired()
            if row["extension_count"] >= self.max_extensions:
                raise conflict(
                    "MAX_EXTENSIONS_EXCEEDED",
                    f"Maximum reservation extensions ({self.max_extensions}) reached",
                )
            expires = checked(int(row["expires_at_ms"]) + extend_by_ms, "expires_at_ms")
            conn.execute(
                "UPDATE reservations SET expires_at_ms = ?, extension_count = extension_count + 1 "
                "WHERE reservation_id = ?",
                (expires, reservation_id),
            )
            budgets = load_budgets(conn, json.loads(row["budgeted_scopes"]), row["unit"])
            result: Json = {
                "status": "ACTIVE",
                "expires_at_ms": expires,
                "balances": [balances.balance(b) for b in budgets],
            }
            remember(conn, tenant, endpoint, key, body_hash, result, now, reservation_id)
        return {**result, "remaining_ttl_ms": max(0, expires - now)}

    def create_event(self, tenant: str, req: EventRequest, body_hash: str) -> Json:
        """POST /v1/events: post-only accounting, atomic across derived scopes."""
        _own_subject(tenant, req.subject)
        now = self.clock()
        with self.db.write() as conn:
            expire_holds(conn, now)
            replayed = replay(conn, tenant, "event", req.idempotency_key, body_hash)
            if replayed is not None:
                return replayed
            scopes = derive_scopes(req.subject)
            unit, amount = req.actual.unit, req.actual.amount
            budgets = load_budgets(conn, scopes, unit)
            if not budgets:
                raise _missing_budget(conn, scopes, unit)
            for budget in budgets:
                if budget.status in ("FROZEN", "CLOSED"):
                    code = f"BUDGET_{budget.status}"
                    raise conflict(code, DENIAL_MESSAGES[code].format(scope=budget.scope))
                if req.overage_policy == "REJECT" and budget.remaining < amount:
                    raise conflict(
                        "BUDGET_EXCEEDED",
                        DENIAL_MESSAGES["BUDGET_EXCEEDED"].format(scope=budget.scope),
                    )
            charged = charge_overage(budgets, amount, req.overage_policy)
            save_budgets(conn, budgets, now)
            event_id = "evt_" + uuid.uuid4().hex
            record = {
                "subject": req.subject,
                "action": req.action,
                "metrics": req.metrics,
                "metadata": req.metadata,
            }
            conn.execute(
                "INSERT INTO events (event_id, tenant_id, scope_path, unit, amount, charged, body, "
                "created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event_id, tenant, scopes[-1], unit, amount, charged, dumps(record), now),
            )
            result = {
                "status": "APPLIED",
                "event_id": event_id,
                "charged": wire.amount(unit, charged),
                "balances": [balances.balance(b) for b in budgets],
            }
            remember(conn, tenant, "event", req.idempotency_key, body_hash, result, now)
        return result


def _reservation_row(
    reservation_id: str,
    tenant: str,
    req: ReserveRequest,
    scopes: list[str],
    now: int,
    expires: int,
) -> list[object]:
    """The new hold's ``reservations`` row, prepared before the write lock is taken."""
    return [
        reservation_id,
        tenant,
        dumps(req.subject),
        dumps(req.action),
        req.estimate.unit,
        req.estimate.amount,
        scopes[-1],
        dumps(scopes),
        "",  # budgeted scopes, known inside the transaction
        req.overage_policy,
        req.idempotency_key,
        dumps(req.metadata) if req.metadata is not None else None,
        now,
        expires,
        req.grace_period_ms,
    ]


def _hold(
    conn: sqlite3.Connection, budgets: list[Budget], estimate: int, row: list[object], now: int
) -> None:
    """Place the hold of ``row`` on ``budgets``, or raise the reference's first denial."""
    denial = reserve_denial(budgets, estimate)
    if denial is not None:
        code, scope = denial
        raise conflict(code, DENIAL_MESSAGES[code].format(scope=scope), {"scope": scope})
    for budget in budgets:
        budget.reserved += estimate
    save_budgets(conn, budgets, now)
    row[8] = dumps([b.scope for b in budgets])
    conn.execute(
        "INSERT INTO reservations (reservation_id, tenant_id, status, subject, action, "
        "unit, amount, scope_path, affected_scopes, budgeted_scopes, overage_policy, "
        "idempotency_key, metadata, created_at_ms, expires_at_ms, grace_ms) "
        "VALUES (?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def _evaluate(
    conn: sqlite3.Connection,
    scopes: list[str],
    budgets: list[Budget],
    estimate: Amount,
    *,
    dry_run: bool,
) -> Json:
    """A decide / dry-run outcome: denial is a 200 DENY with a reason_code."""
    result: Json = {"decision": "ALLOW", "affected_scopes": scopes}
    if dry_run:
        result["scope_path"] = scopes[-1]
        result["reserved"] = estimate.wire()
    if not budgets:
        error = _missing_budget(conn, scopes, estimate.unit)
        if error.code == "UNIT_MISMATCH":
            raise error
        result.update(decision="DENY", reason_code="BUDGET_NOT_FOUND")
        return result
    denial = reserve_denial(budgets, estimate.amount)
    if denial is not None:
        result.update(decision="DENY", reason_code=denial[0])
    else:
        caps = _caps(budgets, scopes[-1])
        if caps:
            result.update(decision="ALLOW_WITH_CAPS", caps=caps)
    if dry_run:
        result["balances"] = [balances.balance(b) for b in budgets]
    return result


def _missing_budget(conn: sqlite3.Connection, scopes: list[str], unit: str) -> LedgerError:
    """No budget in ``unit``: UNIT_MISMATCH if one exists in another unit, else 404."""
    for scope in scopes:
        units = [
            r["unit"]
            for r in conn.execute(
                "SELECT unit FROM budgets WHERE scope = ? AND unit != ? ORDER BY unit",
                (scope, unit),
            )
        ]
        if units:
            return LedgerError(
                400,
                "UNIT_MISMATCH",
                f"No {unit} budget at {scope}; it is budgeted in {', '.join(units)}",
                {"scope": scope, "requested_unit": unit, "expected_units": units},
            )
    return not_found(f"Budget not found for provided scope: {scopes[-1]}")


def _own_subject(tenant: str, subject: Json) -> None:
    if "tenant" in subject and subject["tenant"] != tenant:
        raise forbidden("subject.tenant does not match the tenant of the API key")


def _finalized(row: sqlite3.Row, target: str, key: str, body_hash: str) -> Json | None:
    """Replay for the same key on the same transition; otherwise finalized is a 409."""
    if row["status"] == target and row["final_key"] == key:
        if row["final_hash"] != body_hash:
            raise conflict(
                "IDEMPOTENCY_MISMATCH", "Idempotency key reused with a different request body"
            )
        return dict(json.loads(row["final_response"]))
    if row["status"] in ("COMMITTED", "RELEASED"):
        raise conflict("RESERVATION_FINALIZED", f"Reservation is {row['status']}")
    return None


def _require_live(row: sqlite3.Row, now: int) -> None:
    if row["status"] == "EXPIRED" or now > row["expires_at_ms"] + row["grace_ms"]:
        raise expired()


def _with_ttl(conn: sqlite3.Connection, response: Json, now: int, reservation_id: Any) -> Json:
    """Replays recompute the volatile remaining_ttl_ms (0 once no longer ACTIVE)."""
    if "expires_at_ms" not in response or reservation_id is None:
        return response
    found = conn.execute(
        "SELECT status FROM reservations WHERE reservation_id = ?", (reservation_id,)
    ).fetchone()
    active = found is not None and found["status"] == "ACTIVE"
    ttl = max(0, int(response["expires_at_ms"]) - now) if active else 0
    return {**response, "remaining_ttl_ms": ttl}


def _caps(budgets: list[Budget], scope_path: str) -> Json | None:
    """Caps of the subject's own scope (``scope_path``, the deepest), for the soft landing of
    reserve / decide / dry run. The reference reads them from that scope's budget only
    (reserve.lua and RedisReservationRepository): caps on a parent scope do not apply, and
    a subject whose deepest scope has no budget gets none."""
    for budget in budgets:
        if budget.scope == scope_path and budget.caps:
            return budget.caps
    return None
