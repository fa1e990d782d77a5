"""Webhook subscriptions and the thresholds each has fired, in the ledger's SQLite file.

A mark (subscription, scope, unit, threshold) records that a crossing was delivered in the
current period; it is claimed atomically (``INSERT OR IGNORE`` in one write transaction),
so two concurrent commits never both fire one threshold.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from dataclasses import dataclass

from ..ledger.db import Database
from ..protocol.webhook_requests import WebhookSpec

SYSTEM_TENANT = "__system__"  # the reference's owner of a subscription for every tenant

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS webhooks (
        subscription_id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        event_types TEXT NOT NULL,
        thresholds TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_marks (
        subscription_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        unit TEXT NOT NULL,
        threshold REAL NOT NULL,
        PRIMARY KEY (subscription_id, scope, unit, threshold)
    ) WITHOUT ROWID""",
    # A budget at or below zero remaining: budget.exhausted fires on the way down, once.
    """CREATE TABLE IF NOT EXISTS webhook_exhausted (
        subscription_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        unit TEXT NOT NULL,
        PRIMARY KEY (subscription_id, scope, unit)
    ) WITHOUT ROWID""",
)


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    tenant_id: str
    url: str
    event_types: tuple[str, ...]
    thresholds: tuple[float, ...]
    secret: str
    created_at_ms: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Subscription:
        return cls(
            row["subscription_id"], row["tenant_id"], row["url"],
            tuple(json.loads(row["event_types"])), tuple(json.loads(row["thresholds"])),
            row["secret"], row["created_at_ms"],
        )  # fmt: skip


@dataclass(frozen=True)
class BudgetFigures:
    scope: str
    unit: str
    allocated: int
    spent: int
    reserved: int
    debt: int


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.write() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    def create(self, tenant_id: str | None, spec: WebhookSpec, now_ms: int) -> Subscription:
        sub = Subscription(
            "whsub_" + uuid.uuid4().hex, tenant_id or SYSTEM_TENANT, spec.url, spec.event_types,
            spec.budget_utilization, spec.signing_secret or "whsec_" + secrets.token_urlsafe(32),
            now_ms,
        )  # fmt: skip
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO webhooks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sub.subscription_id, sub.tenant_id, sub.url, json.dumps(sub.event_types),
                 json.dumps(sub.thresholds), sub.secret, now_ms),
            )  # fmt: skip
        return sub

    def subscriptions(self, tenant_id: str | None = None) -> list[Subscription]:
        query = "SELECT * FROM webhooks"
        args: tuple[str, ...] = ()
        if tenant_id:
            query, args = query + " WHERE tenant_id = ?", (tenant_id,)
        with self.db.read() as conn:
            rows = conn.execute(query + " ORDER BY created_at_ms, subscription_id", args)
            return [Subscription.from_row(row) for row in rows.fetchall()]

    def get(self, subscription_id: str) -> Subscription | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM webhooks WHERE subscription_id = ?", (subscription_id,)
            ).fetchone()
        return Subscription.from_row(row) if row else None

    def delete(self, subscription_id: str) -> bool:
        with self.db.write() as conn:
            conn.execute("DELETE FROM webhook_marks WHERE subscription_id = ?", (subscription_id,))
            conn.execute(
                "DELETE FROM webhook_exhausted WHERE subscription_id = ?", (subscription_id,)
            )
            gone = conn.execute(
                "DELETE FROM webhooks WHERE subscription_id = ?", (subscription_id,)
            ).rowcount
        return gone > 0

    def listening(self, tenant_id: str, *event_types: str) -> list[Subscription]:
        """The subscriptions of ``tenant_id`` (or of every tenant) to any of ``event_types``."""
        return [
            sub
            for sub in self.subscriptions()
            if sub.tenant_id in (tenant_id, SYSTEM_TENANT)
            and any(event_type in sub.event_types for event_type in event_types)
        ]

    def budgets(self, tenant_id: str) -> list[BudgetFigures]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT scope, unit, allocated, spent, reserved, debt FROM budgets"
                " WHERE tenant_id = ?",
                (tenant_id,),
            ).fetchall()
        return [BudgetFigures(*tuple(row)) for row in rows]

    def marks(self, subscription_id: str, scope: str, unit: str) -> set[float]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT threshold FROM webhook_marks WHERE subscription_id = ? AND scope = ?"
                " AND unit = ?",
                (subscription_id, scope, unit),
            ).fetchall()
        return {row[0] for row in rows}

    def claim(self, subscription_id: str, scope: str, unit: str, threshold: float) -> bool:
        """Mark ``threshold`` fired; False when it already was (someone else delivers it)."""
        with self.db.write() as conn:
            return (
                conn.execute(
                    "INSERT OR IGNORE INTO webhook_marks VALUES (?, ?, ?, ?)",
                    (subscription_id, scope, unit, threshold),
                ).rowcount
                == 1
            )

    def rearm(self, subscription_id: str, scope: str, unit: str, below: float) -> None:
        """Forget the marks above ``below`` utilization: those thresholds may fire again."""
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM webhook_marks WHERE subscription_id = ? AND scope = ? AND unit = ?"
                " AND threshold > ?",
                (subscription_id, scope, unit, below),
            )

    def set_exhausted(self, subscription_id: str, scope: str, unit: str, exhausted: bool) -> bool:
        """Record whether the budget has nothing left; True when that changed (so two
        concurrent commits never both see the transition)."""
        with self.db.write() as conn:
            if exhausted:
                statement = "INSERT OR IGNORE INTO webhook_exhausted VALUES (?, ?, ?)"
            else:
                statement = (
                    "DELETE FROM webhook_exhausted WHERE subscription_id = ? AND scope = ?"
                    " AND unit = ?"
                )
            return conn.execute(statement, (subscription_id, scope, unit)).rowcount == 1
