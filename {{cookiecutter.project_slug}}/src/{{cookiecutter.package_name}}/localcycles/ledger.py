"""The ledger: every protocol operation as one SQLite transaction over the shared file.

The HTTP layer authenticates and validates; everything here is a function of the database
(and the injectable clock), so several server threads or processes can share one file.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import wire
from .accounting import (
    DENIAL_MESSAGES,
    Budget,
    charge_overage,
    checked,
    reconcile_over_limit,
    reserve_denial,
)
from .accounting import fund as apply_funding
from .db import Database
from .errors import MAX_INT64, CyclesError, conflict, forbidden, invalid, not_found
from .scopes import LEVELS, derive_scopes, has_segment, normalize_scope
from .validation import UNITS, Amount, EventRequest, ReserveRequest
from .validation import caps as validate_caps

Json = dict[str, Any]
Clock = Callable[[], int]

MAX_EXTENSIONS = 10
TENANT_PATTERN = re.compile(r"^[a-z0-9-]{1,64}$")
FUNDING_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


# Encoders built once: json.dumps with any option builds a new JSONEncoder per call. Values
# come from parsed JSON or are built here, so they cannot be circular.
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def payload_hash(body: Any) -> str:
    """Stable hash of a request body (sorted-key compact JSON) for idempotency comparison."""
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class LocalLedger:
    """A Cycles ledger in one SQLite file (WAL). Safe across threads and processes."""

    def __init__(
        self, db_path: str, *, clock: Clock | None = None, max_extensions: int = MAX_EXTENSIONS
    ) -> None:
        self.db = Database(db_path)
        self.path = self.db.path
        self.clock: Clock = clock or wall_clock_ms
        self.max_extensions = max_extensions
        # Presented API key -> (tenant, valid until ms); only keys the ledger accepted.
        self._auth_cache: dict[str, tuple[str, int]] = {}

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ provisioning

    def create_tenant(self, tenant_id: str, name: str | None = None) -> tuple[Json, bool]:
        """Create a tenant (idempotent). Returns (Tenant, created)."""
        if not isinstance(tenant_id, str) or not TENANT_PATTERN.match(tenant_id):
            raise invalid("tenant_id must match ^[a-z0-9-]+$ (at most 64 chars)")
        now = self.clock()
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO tenants (tenant_id, name, created_at_ms) VALUES (?, ?, ?)",
                (tenant_id, name or tenant_id, now),
            )
            row = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
        tenant = {
            "tenant_id": row["tenant_id"],
            "name": row["name"],
            "status": row["status"],
            "created_at": wire.iso(row["created_at_ms"]),
        }
        return tenant, cur.rowcount == 1

    def list_tenants(self) -> list[Json]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM tenants ORDER BY tenant_id").fetchall()
        return [
            {
                "tenant_id": r["tenant_id"],
                "name": r["name"],
                "status": r["status"],
                "created_at": wire.iso(r["created_at_ms"]),
            }
            for r in rows
        ]

    def create_api_key(
        self,
        tenant_id: str,
        key: str | None = None,
        *,
        name: str = "default",
        permissions: Sequence[str] | None = None,
        expires_at_ms: int | None = None,
    ) -> str:
        """Register an API key for ``tenant_id`` and return the secret (generated if None).

        Only a SHA-256 hash is stored. Re-registering the same key for the same tenant is a
        no-op; the same key for another tenant is 409 DUPLICATE_RESOURCE.
        """
        return str(
            self.issue_api_key(
                tenant_id, key, name=name, permissions=permissions, expires_at_ms=expires_at_ms
            )["key_secret"]
        )

    def issue_api_key(
        self,
        tenant_id: str,
        key: str | None = None,
        *,
        name: str = "default",
        permissions: Sequence[str] | None = None,
        expires_at_ms: int | None = None,
    ) -> Json:
        """Like create_api_key, returning the admin API's ApiKeyCreateResponse."""
        secret = key or "cyc_live_" + secrets.token_urlsafe(32)
        if not 8 <= len(secret) <= 512 or not secret.isprintable():
            raise invalid("API key must be 8..512 printable characters")
        perms = list(
            permissions
            or [
                "reservations:create",
                "reservations:commit",
                "reservations:release",
                "reservations:extend",
                "reservations:list",
                "balances:read",
            ]
        )
        now = self.clock()
        key_id = "key_" + uuid.uuid4().hex[:16]
        with self.db.write() as conn:
            self._require_tenant(conn, tenant_id)
            row = conn.execute(
                "SELECT * FROM api_keys WHERE key_hash = ?", (hash_key(secret),)
            ).fetchone()
            if row is not None and row["tenant_id"] != tenant_id:
                raise conflict("DUPLICATE_RESOURCE", "API key already registered")
            if row is None:
                conn.execute(
                    "INSERT INTO api_keys (key_hash, key_id, key_prefix, tenant_id, name, "
                    "permissions, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        hash_key(secret),
                        key_id,
                        secret[:14],
                        tenant_id,
                        name,
                        _dumps(perms),
                        now,
                        expires_at_ms,
                    ),
                )
            else:
                key_id, now = row["key_id"], row["created_at_ms"]
        out: Json = {
            "key_id": key_id,
            "key_secret": secret,
            "key_prefix": secret[:14],
            "tenant_id": tenant_id,
            "permissions": perms,
            "created_at": wire.iso(now),
        }
        if expires_at_ms is not None:
            out["expires_at"] = wire.iso(expires_at_ms)
        return out

    def authenticate(self, secret: str) -> str | None:
        """The tenant an API key belongs to, or None for an unknown/expired/revoked key.

        Positive answers are cached for a second: a key lookup on every request costs more
        than the rest of a read, and keys are created far more often than changed. A cached
        key is not even hashed again.
        """
        now = self.clock()
        cached = self._auth_cache.get(secret)
        if cached is not None and cached[1] > now:
            return cached[0]
        digest = hash_key(secret)
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT tenant_id, status, expires_at_ms FROM api_keys WHERE key_hash = ?",
                (digest,),
            ).fetchone()
        if row is None or row["status"] != "ACTIVE":
            return None
        if row["expires_at_ms"] is not None and row["expires_at_ms"] <= now:
            return None
        valid_until = min(now + 1000, row["expires_at_ms"] or now + 1000)
        self._auth_cache[secret] = (str(row["tenant_id"]), valid_until)
        return str(row["tenant_id"])

    def set_budget(
        self,
        scope: str,
        unit: str = "USD_MICROCENTS",
        allocated: int = 0,
        overdraft_limit: int = 0,
        caps: Json | None = None,
        commit_overage_policy: str | None = None,
    ) -> Json:
        """Create or update the budget at ``scope``: allocated is set (like RESET), spend,
        holds and debt are kept. Returns the BudgetLedger."""
        scope, tenant_id = self._scope(scope)
        self._check_amounts(unit, allocated, overdraft_limit)
        caps_json = _dumps(validate_caps(caps)) if caps else None
        now = self.clock()
        with self.db.write() as conn:
            self._require_tenant(conn, tenant_id)
            existing = self._budget(conn, scope, unit)
            if existing is None:
                budget = self._insert_budget(
                    conn,
                    tenant_id,
                    scope,
                    unit,
                    allocated,
                    overdraft_limit,
                    caps_json,
                    commit_overage_policy,
                    now,
                )
            else:
                existing.allocated = allocated
                existing.overdraft_limit = overdraft_limit
                reconcile_over_limit(existing)
                existing.caps = json.loads(caps_json) if caps_json else None
                existing.commit_overage_policy = commit_overage_policy
                checked(existing.remaining, "remaining")
                budget = existing
                self._save(conn, [budget], now)
        return wire.ledger(budget)

    def create_budget(
        self,
        tenant_id: str | None,
        scope: str,
        unit: str,
        allocated: int,
        overdraft_limit: int = 0,
        caps: Json | None = None,
        commit_overage_policy: str | None = None,
    ) -> Json:
        """Admin createBudget: 409 DUPLICATE_RESOURCE when the (scope, unit) ledger exists.

        ``tenant_id`` None takes the tenant from the scope (admin callers)."""
        scope, scope_tenant = self._scope(scope)
        tenant_id = tenant_id or scope_tenant
        if scope_tenant != tenant_id:
            raise invalid("scope must start with tenant:<tenant_id>")
        self._check_amounts(unit, allocated, overdraft_limit)
        caps_json = _dumps(validate_caps(caps)) if caps else None
        now = self.clock()
        with self.db.write() as conn:
            self._require_tenant(conn, tenant_id)
            if self._budget(conn, scope, unit) is not None:
                raise conflict("DUPLICATE_RESOURCE", f"Budget exists: {scope} {unit}")
            budget = self._insert_budget(
                conn,
                tenant_id,
                scope,
                unit,
                allocated,
                overdraft_limit,
                caps_json,
                commit_overage_policy,
                now,
            )
        return wire.ledger(budget)

    def update_budget(
        self,
        scope: str,
        unit: str,
        *,
        overdraft_limit: int | None = None,
        caps: Json | None = None,
        clear_caps: bool = False,
        commit_overage_policy: str | None = None,
        tenant_id: str | None = None,
    ) -> Json:
        """Admin updateBudget (overdraft limit, policy; caps as a local extension)."""
        scope, _ = self._scope(scope)
        if overdraft_limit is not None:
            self._check_amounts(unit, 0, overdraft_limit)
        caps_value = validate_caps(caps) if caps else None
        now = self.clock()
        with self.db.write() as conn:
            budget = self._budget_for_admin(conn, scope, unit, tenant_id)
            if overdraft_limit is not None:
                budget.overdraft_limit = overdraft_limit
                reconcile_over_limit(budget)
            if caps_value is not None or clear_caps:
                budget.caps = caps_value
            if commit_overage_policy is not None:
                budget.commit_overage_policy = commit_overage_policy
            self._save(conn, [budget], now)
        return wire.ledger(budget)

    def fund(
        self,
        scope: str,
        unit: str,
        operation: str,
        amount: int,
        *,
        spent: int | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Admin fundBudget: CREDIT, DEBIT, RESET, RESET_SPENT or REPAY_DEBT.

        Returns the reference BudgetFundingResponse (previous/new allocated, remaining...).
        """
        scope, scope_tenant = self._scope(scope)
        if operation not in FUNDING_OPERATIONS:
            raise invalid(f"operation must be one of {', '.join(FUNDING_OPERATIONS)}")
        self._check_amounts(unit, amount, spent or 0)
        body_hash = payload_hash([scope, unit, operation, amount, spent])
        now = self.clock()
        with self.db.write() as conn:
            self._expire(conn, now)
            endpoint = f"fund:{scope}:{unit}"
            if idempotency_key:
                replay = self._replay(conn, scope_tenant, endpoint, idempotency_key, body_hash)
                if replay is not None:
                    return replay
            budget = self._budget_for_admin(conn, scope, unit, tenant_id)
            before = Budget(**vars(budget))
            apply_funding(budget, operation, amount, spent)
            self._save(conn, [budget], now)
            out: Json = {
                "operation": operation,
                "previous_allocated": wire.amount(unit, before.allocated),
                "new_allocated": wire.amount(unit, budget.allocated),
                "previous_remaining": wire.amount(unit, before.remaining),
                "new_remaining": wire.amount(unit, budget.remaining),
                "previous_debt": wire.amount(unit, before.debt),
                "new_debt": wire.amount(unit, budget.debt),
                "previous_spent": wire.amount(unit, before.spent),
                "new_spent": wire.amount(unit, budget.spent),
                "timestamp": wire.iso(now),
            }
            if idempotency_key:
                self._remember(conn, scope_tenant, endpoint, idempotency_key, body_hash, out, now)
        return out

    def budget(self, scope: str, unit: str = "USD_MICROCENTS") -> Json | None:
        """Flat figures of one budget (after lazy expiry), or None."""
        scope, _ = self._scope(scope)
        self.expire_now()
        with self.db.read() as conn:
            found = self._budget(conn, scope, unit)
        return wire.flat_balance(found) if found else None

    def list_budgets(
        self, tenant_id: str, scope_prefix: str | None = None, unit: str | None = None
    ) -> list[Json]:
        self.expire_now()
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM budgets WHERE tenant_id = ? ORDER BY scope, unit", (tenant_id,)
            ).fetchall()
        budgets = [Budget.from_row(r) for r in rows]
        return [
            wire.ledger(b)
            for b in budgets
            if (not scope_prefix or b.scope.startswith(scope_prefix.lower()))
            and (not unit or b.unit == unit)
        ]

    def balances(self, tenant: str, **filters: str) -> list[Json]:
        """Flat balance rows (ints) of every budget of ``tenant`` matching subject filters."""
        return [wire.flat_balance(b) for b in self._matching_budgets(tenant, filters, None, 10**9)]

    # ------------------------------------------------------------------ protocol

    def reserve(self, tenant: str, req: ReserveRequest, body_hash: str) -> Json:
        """POST /v1/reservations (also dry_run)."""
        self._own_subject(tenant, req.subject)
        now = self.clock()
        # Everything that does not read the ledger is prepared before taking the write lock.
        scopes = derive_scopes(req.subject)
        unit, estimate = req.estimate.unit, req.estimate.amount
        reservation_id = "rsv_" + uuid.uuid4().hex
        expires = now + req.ttl_ms
        row = [
            reservation_id,
            tenant,
            _dumps(req.subject),
            _dumps(req.action),
            unit,
            estimate,
            scopes[-1],
            _dumps(scopes),
            "",  # budgeted scopes, known inside the transaction
            req.overage_policy,
            req.idempotency_key,
            _dumps(req.metadata) if req.metadata is not None else None,
            now,
            expires,
            req.grace_period_ms,
        ]
        with self.db.write() as conn:
            self._expire(conn, now)
            replay = self._replay(conn, tenant, "reserve", req.idempotency_key, body_hash)
            if replay is not None:
                return self._with_ttl(conn, replay, now, replay.get("reservation_id"))
            budgets = self._budgets(conn, scopes, unit)
            if req.dry_run:
                result = self._evaluate(conn, scopes, budgets, req.estimate, dry_run=True)
                self._remember(conn, tenant, "reserve", req.idempotency_key, body_hash, result, now)
                return result
            if not budgets:
                raise self._missing_budget(conn, scopes, unit)
            denial = reserve_denial(budgets, estimate)
            if denial is not None:
                code, scope = denial
                raise conflict(code, DENIAL_MESSAGES[code].format(scope=scope), {"scope": scope})
            for budget in budgets:
                budget.reserved += estimate
            self._save(conn, budgets, now)
            row[8] = _dumps([b.scope for b in budgets])
            conn.execute(
                "INSERT INTO reservations (reservation_id, tenant_id, status, subject, action, "
                "unit, amount, scope_path, affected_scopes, budgeted_scopes, overage_policy, "
                "idempotency_key, metadata, created_at_ms, expires_at_ms, grace_ms) "
                "VALUES (?, ?, 'ACTIVE', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            caps = _caps(budgets)
            result = {
                "decision": "ALLOW_WITH_CAPS" if caps else "ALLOW",
                "reservation_id": reservation_id,
                "affected_scopes": scopes,
                "expires_at_ms": expires,
                "scope_path": scopes[-1],
                "reserved": req.estimate.wire(),
                "balances": [wire.balance(b) for b in budgets],
            }
            if caps:
                result["caps"] = caps
            self._remember(
                conn, tenant, "reserve", req.idempotency_key, body_hash, result, now, reservation_id
            )
        result["remaining_ttl_ms"] = req.ttl_ms
        return result

    def decide(self, tenant: str, req: ReserveRequest, body_hash: str) -> Json:
        """POST /v1/decide: the reserve evaluation without a hold; denial is a 200 DENY."""
        self._own_subject(tenant, req.subject)
        now = self.clock()
        with self.db.write() as conn:
            self._expire(conn, now)
            replay = self._replay(conn, tenant, "decide", req.idempotency_key, body_hash)
            if replay is not None:
                return replay
            scopes = derive_scopes(req.subject)
            budgets = self._budgets(conn, scopes, req.estimate.unit)
            evaluation = self._evaluate(conn, scopes, budgets, req.estimate, dry_run=False)
            self._remember(conn, tenant, "decide", req.idempotency_key, body_hash, evaluation, now)
        return evaluation

    def commit(
        self,
        tenant: str | None,
        reservation_id: str,
        key: str,
        actual: Amount,
        metadata: Json | None,
        body_hash: str,
    ) -> Json:
        """POST /v1/reservations/{id}/commit."""
        now = self.clock()
        metadata_json = _dumps(metadata) if metadata is not None else None
        with self.db.write() as conn:
            self._expire(conn, now)
            row = self._reservation(conn, tenant, reservation_id)
            replay = self._finalized(row, "COMMITTED", key, body_hash)
            if replay is not None:
                return replay
            self._require_live(row, now)
            if actual.unit != row["unit"]:
                raise CyclesError(
                    400,
                    "UNIT_MISMATCH",
                    f"actual.unit {actual.unit} differs from reserved unit {row['unit']}",
                    {"requested_unit": actual.unit, "expected_units": [row["unit"]]},
                )
            estimate = int(row["amount"])
            budgets = self._budgets(conn, json.loads(row["budgeted_scopes"]), row["unit"])
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
            self._save(conn, budgets, now)
            result: Json = {"status": "COMMITTED", "charged": wire.amount(actual.unit, charged)}
            if delta < 0:
                result["released"] = wire.amount(actual.unit, -delta)
            result["balances"] = [wire.balance(b) for b in budgets]
            conn.execute(
                "UPDATE reservations SET status = 'COMMITTED', committed = ?, finalized_at_ms = ?, "
                "final_key = ?, final_hash = ?, final_response = ?, committed_metadata = ? "
                "WHERE reservation_id = ?",
                (
                    charged,
                    now,
                    key,
                    body_hash,
                    _dumps(result),
                    metadata_json,
                    reservation_id,
                ),
            )
        return result

    def release(self, tenant: str | None, reservation_id: str, key: str, body_hash: str) -> Json:
        """POST /v1/reservations/{id}/release (tenant None: admin on behalf of the owner)."""
        now = self.clock()
        with self.db.write() as conn:
            self._expire(conn, now)
            row = self._reservation(conn, tenant, reservation_id)
            replay = self._finalized(row, "RELEASED", key, body_hash)
            if replay is not None:
                return replay
            self._require_live(row, now)
            budgets = self._budgets(conn, json.loads(row["budgeted_scopes"]), row["unit"])
            for budget in budgets:
                budget.reserved -= int(row["amount"])
            self._save(conn, budgets, now)
            result = {
                "status": "RELEASED",
                "released": wire.amount(row["unit"], row["amount"]),
                "balances": [wire.balance(b) for b in budgets],
            }
            conn.execute(
                "UPDATE reservations SET status = 'RELEASED', finalized_at_ms = ?, final_key = ?, "
                "final_hash = ?, final_response = ? WHERE reservation_id = ?",
                (now, key, body_hash, _dumps(result), reservation_id),
            )
        return result

    def extend(
        self, tenant: str, reservation_id: str, key: str, extend_by_ms: int, body_hash: str
    ) -> Json:
        """POST /v1/reservations/{id}/extend: only before expiry, at most max_extensions."""
        now = self.clock()
        endpoint = f"extend:{reservation_id}"
        with self.db.write() as conn:
            self._expire(conn, now)
            replay = self._replay(conn, tenant, endpoint, key, body_hash)
            if replay is not None:
                return self._with_ttl(conn, replay, now, reservation_id)
            row = self._reservation(conn, tenant, reservation_id)
            if row["status"] in ("COMMITTED", "RELEASED"):
                raise conflict("RESERVATION_FINALIZED", f"Reservation is {row['status']}")
            if row["status"] == "EXPIRED" or now > row["expires_at_ms"]:
                raise CyclesError(410, "RESERVATION_EXPIRED", "Reservation has expired")
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
            result: Json = {"status": "ACTIVE", "expires_at_ms": expires}
            self._remember(conn, tenant, endpoint, key, body_hash, result, now, reservation_id)
        return {**result, "remaining_ttl_ms": max(0, expires - now)}

    def create_event(self, tenant: str, req: EventRequest, body_hash: str) -> Json:
        """POST /v1/events: post-only accounting, atomic across derived scopes."""
        self._own_subject(tenant, req.subject)
        now = self.clock()
        with self.db.write() as conn:
            self._expire(conn, now)
            replay = self._replay(conn, tenant, "event", req.idempotency_key, body_hash)
            if replay is not None:
                return replay
            scopes = derive_scopes(req.subject)
            unit, amount = req.actual.unit, req.actual.amount
            budgets = self._budgets(conn, scopes, unit)
            if not budgets:
                raise self._missing_budget(conn, scopes, unit)
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
            self._save(conn, budgets, now)
            event_id = "evt_" + uuid.uuid4().hex
            conn.execute(
                "INSERT INTO events (event_id, tenant_id, scope_path, unit, amount, charged, body, "
                "created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    tenant,
                    scopes[-1],
                    unit,
                    amount,
                    charged,
                    _dumps(
                        {
                            "subject": req.subject,
                            "action": req.action,
                            "metrics": req.metrics,
                            "metadata": req.metadata,
                        }
                    ),
                    now,
                ),
            )
            result = {
                "status": "APPLIED",
                "event_id": event_id,
                "charged": wire.amount(unit, charged),
                "balances": [wire.balance(b) for b in budgets],
            }
            self._remember(conn, tenant, "event", req.idempotency_key, body_hash, result, now)
        return result

    def get_reservation(self, tenant: str | None, reservation_id: str) -> Json:
        """GET /v1/reservations/{id}; an EXPIRED reservation is 410."""
        self.expire_now()
        with self.db.read() as conn:
            row = self._reservation(conn, tenant, reservation_id)
        if row["status"] == "EXPIRED":
            raise CyclesError(410, "RESERVATION_EXPIRED", "Reservation has expired")
        detail = _summary(row)
        if row["committed"] is not None:
            detail["committed"] = wire.amount(row["unit"], row["committed"])
        if row["finalized_at_ms"] is not None:
            detail["finalized_at_ms"] = row["finalized_at_ms"]
        if row["metadata"]:
            detail["metadata"] = json.loads(row["metadata"])
        return detail

    def list_reservations(
        self,
        tenant: str,
        where: Sequence[tuple[str, Any]],
        order_by: str,
        descending: bool,
        offset: int,
        limit: int,
    ) -> Json:
        """GET /v1/reservations; ``where`` holds (SQL predicate, parameter) pairs built by the
        HTTP layer from a fixed vocabulary, ``order_by`` a whitelisted column."""
        self.expire_now()
        clauses = ["tenant_id = ?", *(clause for clause, _ in where)]
        params: list[Any] = [tenant, *(param for _, param in where)]
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT * FROM reservations WHERE {' AND '.join(clauses)} "
            f"ORDER BY {order_by} {direction}, reservation_id {direction} LIMIT ? OFFSET ?"
        )
        with self.db.read() as conn:
            rows = conn.execute(sql, (*params, limit + 1, offset)).fetchall()
        return {"rows": [_summary(r) for r in rows[:limit]], "has_more": len(rows) > limit}

    def balance_page(
        self, tenant: str, filters: dict[str, str], after: tuple[str, str] | None, limit: int
    ) -> tuple[list[Json], tuple[str, str] | None]:
        """GET /v1/balances page: protocol Balances and the keyset position of the last row."""
        budgets = self._matching_budgets(tenant, filters, after, limit + 1)
        page = budgets[:limit]
        last = (page[-1].scope, page[-1].unit) if len(budgets) > limit and page else None
        return [wire.balance(b) for b in page], last

    def expire_now(self) -> int:
        """Return expired holds to their budgets; cheap no-op when nothing is due."""
        now = self.clock()
        with self.db.read() as conn:
            due = conn.execute(
                "SELECT 1 FROM reservations WHERE status = 'ACTIVE' "
                "AND expires_at_ms + grace_ms < ? LIMIT 1",
                (now,),
            ).fetchone()
        if due is None:
            return 0
        with self.db.write() as conn:
            return self._expire(conn, now)

    # ------------------------------------------------------------------ internals

    def _expire(self, conn: sqlite3.Connection, now: int) -> int:
        """Lazily expire holds whose TTL and grace have both run out (inside a write txn)."""
        rows = conn.execute(
            "SELECT reservation_id, unit, amount, budgeted_scopes FROM reservations "
            "WHERE status = 'ACTIVE' AND expires_at_ms + grace_ms < ?",
            (now,),
        ).fetchall()
        for row in rows:
            scopes = json.loads(row["budgeted_scopes"])
            conn.executemany(
                "UPDATE budgets SET reserved = reserved - ? WHERE scope = ? AND unit = ?",
                [(row["amount"], scope, row["unit"]) for scope in scopes],
            )
            conn.execute(
                "UPDATE reservations SET status = 'EXPIRED' WHERE reservation_id = ?",
                (row["reservation_id"],),
            )
        return len(rows)

    def _evaluate(
        self,
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
            error = self._missing_budget(conn, scopes, estimate.unit)
            if error.code == "UNIT_MISMATCH":
                raise error
            result.update(decision="DENY", reason_code="BUDGET_NOT_FOUND")
            return result
        denial = reserve_denial(budgets, estimate.amount)
        if denial is not None:
            result.update(decision="DENY", reason_code=denial[0])
        else:
            caps = _caps(budgets)
            if caps:
                result.update(decision="ALLOW_WITH_CAPS", caps=caps)
        if dry_run:
            result["balances"] = [wire.balance(b) for b in budgets]
        return result

    def _missing_budget(
        self, conn: sqlite3.Connection, scopes: list[str], unit: str
    ) -> CyclesError:
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
                return CyclesError(
                    400,
                    "UNIT_MISMATCH",
                    f"No {unit} budget at {scope}; it is budgeted in {', '.join(units)}",
                    {"scope": scope, "requested_unit": unit, "expected_units": units},
                )
        return not_found(f"Budget not found for provided scope: {scopes[-1]}")

    @staticmethod
    def _own_subject(tenant: str, subject: Json) -> None:
        if "tenant" in subject and subject["tenant"] != tenant:
            raise forbidden("subject.tenant does not match the tenant of the API key")

    @staticmethod
    def _reservation(
        conn: sqlite3.Connection, tenant: str | None, reservation_id: str
    ) -> sqlite3.Row:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,)
        ).fetchone()
        if row is None:
            raise not_found(f"Reservation not found: {reservation_id}")
        if tenant is not None and row["tenant_id"] != tenant:
            raise forbidden("Reservation belongs to another tenant")
        return row

    @staticmethod
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

    @staticmethod
    def _require_live(row: sqlite3.Row, now: int) -> None:
        if row["status"] == "EXPIRED" or now > row["expires_at_ms"] + row["grace_ms"]:
            raise CyclesError(410, "RESERVATION_EXPIRED", "Reservation has expired")

    @staticmethod
    def _replay(
        conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, body_hash: str
    ) -> Json | None:
        row = conn.execute(
            "SELECT payload_hash, response FROM idempotency WHERE tenant_id = ? AND endpoint = ? "
            "AND key = ?",
            (tenant, endpoint, key),
        ).fetchone()
        if row is None:
            return None
        if row["payload_hash"] != body_hash:
            raise conflict(
                "IDEMPOTENCY_MISMATCH", "Idempotency key reused with a different request body"
            )
        return dict(json.loads(row["response"]))

    @staticmethod
    def _remember(
        conn: sqlite3.Connection,
        tenant: str,
        endpoint: str,
        key: str,
        body_hash: str,
        response: Json,
        now: int,
        reservation_id: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO idempotency (tenant_id, endpoint, key, payload_hash, response, "
            "reservation_id, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant, endpoint, key, body_hash, _dumps(response), reservation_id, now),
        )

    @staticmethod
    def _with_ttl(
        conn: sqlite3.Connection, response: Json, now: int, reservation_id: str | None
    ) -> Json:
        """Replays recompute the volatile remaining_ttl_ms (0 once no longer ACTIVE)."""
        if "expires_at_ms" not in response or reservation_id is None:
            return response
        found = conn.execute(
            "SELECT status FROM reservations WHERE reservation_id = ?", (reservation_id,)
        ).fetchone()
        active = found is not None and found["status"] == "ACTIVE"
        ttl = max(0, int(response["expires_at_ms"]) - now) if active else 0
        return {**response, "remaining_ttl_ms": ttl}

    @staticmethod
    def _budgets(conn: sqlite3.Connection, scopes: Sequence[str], unit: str) -> list[Budget]:
        """Budgets in ``unit`` at the given scopes, in the given (canonical) order."""
        marks = ",".join("?" * len(scopes))
        rows = conn.execute(
            f"SELECT * FROM budgets WHERE unit = ? AND scope IN ({marks})", (unit, *scopes)
        ).fetchall()
        by_scope = {row["scope"]: Budget.from_row(row) for row in rows}
        return [by_scope[s] for s in scopes if s in by_scope]

    @staticmethod
    def _budget(conn: sqlite3.Connection, scope: str, unit: str) -> Budget | None:
        row = conn.execute(
            "SELECT * FROM budgets WHERE scope = ? AND unit = ?", (scope, unit)
        ).fetchone()
        return Budget.from_row(row) if row else None

    def _budget_for_admin(
        self, conn: sqlite3.Connection, scope: str, unit: str, tenant_id: str | None
    ) -> Budget:
        budget = self._budget(conn, scope, unit)
        if budget is None:
            raise CyclesError(404, "BUDGET_NOT_FOUND", f"Budget not found: {scope} {unit}")
        if tenant_id is not None and budget.tenant_id != tenant_id:
            raise forbidden("Budget does not belong to that tenant")
        return budget

    @staticmethod
    def _save(conn: sqlite3.Connection, budgets: Iterable[Budget], now: int) -> None:
        conn.executemany(
            "UPDATE budgets SET allocated = ?, spent = ?, reserved = ?, debt = ?, "
            "overdraft_limit = ?, is_over_limit = ?, caps = ?, commit_overage_policy = ?, "
            "updated_at_ms = ? WHERE scope = ? AND unit = ?",
            [
                (
                    checked(b.allocated, "allocated"),
                    checked(b.spent, "spent"),
                    checked(b.reserved, "reserved"),
                    checked(b.debt, "debt"),
                    b.overdraft_limit,
                    int(b.is_over_limit),
                    _dumps(b.caps) if b.caps else None,
                    b.commit_overage_policy,
                    now,
                    b.scope,
                    b.unit,
                )
                for b in budgets
            ],
        )

    def _insert_budget(
        self,
        conn: sqlite3.Connection,
        tenant_id: str,
        scope: str,
        unit: str,
        allocated: int,
        overdraft_limit: int,
        caps_json: str | None,
        policy: str | None,
        now: int,
    ) -> Budget:
        conn.execute(
            "INSERT INTO budgets (scope, unit, tenant_id, ledger_id, allocated, overdraft_limit, "
            "caps, commit_overage_policy, created_at_ms, updated_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                scope,
                unit,
                tenant_id,
                str(uuid.uuid4()),
                allocated,
                overdraft_limit,
                caps_json,
                policy,
                now,
                now,
            ),
        )
        found = self._budget(conn, scope, unit)
        assert found is not None
        return found

    @staticmethod
    def _require_tenant(conn: sqlite3.Connection, tenant_id: str) -> None:
        if (
            conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
            is None
        ):
            raise CyclesError(404, "TENANT_NOT_FOUND", f"Tenant not found: {tenant_id}")

    @staticmethod
    def _scope(scope: str) -> tuple[str, str]:
        """Canonical scope and its tenant, or 400."""
        if not isinstance(scope, str) or not scope or len(scope) > 1024:
            raise invalid("scope must be a non-empty string")
        try:
            canonical = normalize_scope(scope)
        except ValueError as exc:
            raise invalid(f"invalid scope: {exc}") from None
        return canonical, canonical.split("/", 1)[0].split(":", 1)[1]

    @staticmethod
    def _check_amounts(unit: str, *amounts: int) -> None:
        if unit not in UNITS:
            raise invalid(f"unit must be one of {', '.join(UNITS)}")
        for value in amounts:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
                raise invalid(f"amounts must be integers in [0, {MAX_INT64}]")

    def _matching_budgets(
        self, tenant: str, filters: dict[str, str], after: tuple[str, str] | None, limit: int
    ) -> list[Budget]:
        self.expire_now()
        clauses = ["tenant_id = ?"]
        params: list[Any] = [tenant]
        for level in LEVELS[1:]:
            value = filters.get(level)
            if value:
                clauses.append("instr('/' || scope || '/', ?) > 0")
                params.append(f"/{level}:{value.lower()}/")
        if after is not None:
            clauses.append("(scope, unit) > (?, ?)")
            params.extend(after)
        sql = f"SELECT * FROM budgets WHERE {' AND '.join(clauses)} ORDER BY scope, unit LIMIT ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [b for b in map(Budget.from_row, rows) if has_segment(b.scope, f"tenant:{tenant}")]


def _caps(budgets: list[Budget]) -> Json | None:
    """Caps of the most specific budgeted scope that has any (reserve/decide soft landing)."""
    for budget in reversed(budgets):
        if budget.caps:
            return budget.caps
    return None


def _summary(row: sqlite3.Row) -> Json:
    """ReservationSummary, limited to the fields runcycles 0.5.3's strict model knows."""
    out: Json = {
        "reservation_id": row["reservation_id"],
        "status": row["status"],
        "subject": json.loads(row["subject"]),
        "action": json.loads(row["action"]),
        "reserved": wire.amount(row["unit"], row["amount"]),
        "created_at_ms": row["created_at_ms"],
        "expires_at_ms": row["expires_at_ms"],
        "scope_path": row["scope_path"],
        "affected_scopes": json.loads(row["affected_scopes"]),
    }
    if row["idempotency_key"] is not None:
        out["idempotency_key"] = row["idempotency_key"]
    return out
