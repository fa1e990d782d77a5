"""SQL row helpers shared by the ledger's operations: read, write and replay ledger rows.

Every function takes the connection of the caller's transaction (``Database.write()`` or
``.read()``), so an operation composes them inside one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..protocol import wire
from ..protocol.errors import LedgerError, conflict, forbidden, not_found
from .accounting import Budget, checked
from .db import Database

Json = dict[str, Any]

# Encoders built once: json.dumps with any option builds a new JSONEncoder per call. Values
# come from parsed JSON or are built here, so they cannot be circular.
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode
dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def payload_hash(body: Any) -> str:
    """Stable hash of a request body (sorted-key compact JSON) for idempotency comparison."""
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


# ---------------------------------------------------------------------- budgets


def load_budget(conn: sqlite3.Connection, scope: str, unit: str) -> Budget | None:
    row = conn.execute(
        "SELECT * FROM budgets WHERE scope = ? AND unit = ?", (scope, unit)
    ).fetchone()
    return Budget.from_row(row) if row else None


def load_budgets(conn: sqlite3.Connection, scopes: Sequence[str], unit: str) -> list[Budget]:
    """Budgets in ``unit`` at the given scopes, in the given (canonical) order."""
    marks = ",".join("?" * len(scopes))
    rows = conn.execute(
        f"SELECT * FROM budgets WHERE unit = ? AND scope IN ({marks})", (unit, *scopes)
    ).fetchall()
    by_scope = {row["scope"]: Budget.from_row(row) for row in rows}
    return [by_scope[s] for s in scopes if s in by_scope]


def save_budgets(conn: sqlite3.Connection, budgets: Iterable[Budget], now: int) -> None:
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
                dumps(b.caps) if b.caps else None,
                b.commit_overage_policy,
                now,
                b.scope,
                b.unit,
            )
            for b in budgets
        ],
    )


def insert_budget(
    conn: sqlite3.Connection,
    tenant_id: str,
    scope: str,
    unit: str,
    allocated: int,
    overdraft_limit: int,
    caps: Json | None,
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
            dumps(caps) if caps else None,
            policy,
            now,
            now,
        ),
    )
    found = load_budget(conn, scope, unit)
    assert found is not None
    return found


def require_tenant(conn: sqlite3.Connection, tenant_id: str) -> None:
    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone() is None:
        raise LedgerError(404, "TENANT_NOT_FOUND", f"Tenant not found: {tenant_id}")


# ---------------------------------------------------------------------- reservations


def load_reservation(
    conn: sqlite3.Connection, tenant: str | None, reservation_id: str
) -> sqlite3.Row:
    """The reservation row, or 404; 403 when it belongs to another tenant (None: admin)."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM reservations WHERE reservation_id = ?", (reservation_id,)
    ).fetchone()
    if row is None:
        raise not_found(f"Reservation not found: {reservation_id}")
    if tenant is not None and row["tenant_id"] != tenant:
        raise forbidden("Reservation belongs to another tenant")
    return row


def expire_holds(conn: sqlite3.Connection, now: int) -> int:
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


def expire_now(db: Database, now: int) -> int:
    """Return expired holds to their budgets; a cheap read when nothing is due."""
    with db.read() as conn:
        due = conn.execute(
            "SELECT 1 FROM reservations WHERE status = 'ACTIVE' "
            "AND expires_at_ms + grace_ms < ? LIMIT 1",
            (now,),
        ).fetchone()
    if due is None:
        return 0
    with db.write() as conn:
        return expire_holds(conn, now)


def summary(row: sqlite3.Row) -> Json:
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


# ---------------------------------------------------------------------- idempotency


def replay(
    conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, body_hash: str
) -> Json | None:
    """The stored response for (tenant, endpoint, key), None if new; 409 for another body."""
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


def remember(
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
        (tenant, endpoint, key, body_hash, dumps(response), reservation_id, now),
    )
