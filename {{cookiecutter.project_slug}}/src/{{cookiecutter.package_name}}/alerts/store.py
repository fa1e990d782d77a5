"""Alerts' durable state, one SQLite file in ``CYCLES_JOURNAL_DIR`` (WAL, shared by every
worker): tenants' webhook URLs and secrets, the Cycles event ids already received (bounded),
and the outbox of alerts to forward.

Why here and not in Cycles: the reference admin API's tenant webhooks belong to Cycles
tenants, and under workspace isolation one Cycles tenant holds every app tenant; the app's
tenants, their URLs and secrets are the app's. Accepting an event records its id and queues
its forward in one transaction, so a crash loses neither and a redelivery forwards nothing.

With ``BUDGET_ALERT_SIGNING_KEY`` set, the ``secret`` column holds no secret, only what
derives one with the key (``tenant_secrets.py``). Without it, tenants' signing secrets are
stored as they are (the app must have them to sign), protected only by the file's mode
(0600) and the host: anyone who can read the file can sign alerts as the app. A tenant who
fears its secret leaked PUTs its URL again for a new one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

FILE_NAME = "alerts.sqlite3"
# Event ids kept for de-duplication: the newest this many (Cycles redelivers within hours).
MAX_SEEN_EVENTS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant_webhooks (
    tenant TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alert_marks (
    mark TEXT PRIMARY KEY, seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, alert_id TEXT NOT NULL,
    alert_type TEXT NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
"""


class Accepted(IntEnum):
    """What became of a received event (false only for a duplicate)."""

    DUPLICATE = 0  # its id was seen before: nothing done
    RECORDED = 1  # new, nothing to forward
    QUEUED = 2  # new, its forward queued
    REPEAT = 3  # new, but its crossing was forwarded already (another event type)


@dataclass(frozen=True)
class TenantWebhook:
    tenant: str
    url: str
    secret: str  # as stored: the secret, or what derives it (tenant_secrets.py)


@dataclass(frozen=True)
class Forward:
    """One alert to post to its tenant's URL (the URL and secret are read when sent)."""

    id: int
    tenant: str
    alert_id: str
    alert_type: str
    body: bytes
    attempts: int


class AlertStore:
    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = directory / FILE_NAME
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (a connection per process: never shared across a fork)."""
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                self._conn, self._pid = self._open(), os.getpid()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        os.chmod(self.path, 0o600)  # tenants' signing secrets
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        return conn

    # --- tenants' webhooks ------------------------------------------------------------

    def set_webhook(self, tenant: str, url: str, secret: str) -> None:
        with self._db() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tenant_webhooks VALUES (?, ?, ?, ?)",
                (tenant, url, secret, self.clock()),
            )

    def webhook(self, tenant: str) -> TenantWebhook | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT tenant, url, secret FROM tenant_webhooks WHERE tenant = ?", (tenant,)
            ).fetchone()
        return TenantWebhook(*row) if row else None

    def delete_webhook(self, tenant: str) -> bool:
        with self._db() as conn:
            gone = conn.execute("DELETE FROM tenant_webhooks WHERE tenant = ?", (tenant,))
            return gone.rowcount > 0

    # --- received events and the outbox -------------------------------------------------

    def accept(
        self,
        event_id: str,
        forward: tuple[str, str, str, bytes] | None,
        mark: str | None = None,
    ) -> Accepted:
        """Record ``event_id`` (DUPLICATE when it was seen before). A new event's ``forward``
        ``(tenant, alert_id, alert_type, body)`` is queued in the same transaction, unless
        its ``mark`` (tenant, scope, threshold, period) was forwarded already: two events
        for one crossing (``budget.threshold_crossed`` at 1.0 and ``budget.exhausted``)
        reach a tenant once."""
        now = self.clock()
        with self._db() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO seen_events VALUES (?, ?)", (event_id, now)
            )
            if cursor.rowcount == 0:
                return Accepted.DUPLICATE
            conn.execute(
                "DELETE FROM seen_events WHERE rowid <= (SELECT max(rowid) FROM seen_events) - ?",
                (MAX_SEEN_EVENTS,),
            )
            if mark is not None:
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO alert_marks VALUES (?, ?)", (mark, now)
                )
                if claimed.rowcount == 0:
                    return Accepted.REPEAT
                conn.execute(
                    "DELETE FROM alert_marks"
                    " WHERE rowid <= (SELECT max(rowid) FROM alert_marks) - ?",
                    (MAX_SEEN_EVENTS,),
                )
            if forward is not None:
                conn.execute(
                    "INSERT INTO outbox (tenant, alert_id, alert_type, body, next_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (*forward, now),
                )
                return Accepted.QUEUED
            return Accepted.RECORDED

    def claim_due(self, lease_s: float, limit: int = 20) -> list[Forward]:
        """Forwards due now, leased for ``lease_s`` (another worker skips them meanwhile)."""
        now = self.clock()
        with self._db() as conn:
            rows = conn.execute(
                "SELECT id, tenant, alert_id, alert_type, body, attempts FROM outbox"
                " WHERE next_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE outbox SET next_at = ? WHERE id = ?", [(now + lease_s, r[0]) for r in rows]
            )
        return [Forward(*row) for row in rows]

    def next_due(self) -> float | None:
        with self._db() as conn:
            row = conn.execute("SELECT min(next_at) FROM outbox").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def done(self, forward_id: int) -> None:
        with self._db() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (forward_id,))

    def retry(self, forward_id: int, attempts: int, delay_s: float) -> None:
        with self._db() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?",
                (attempts, self.clock() + delay_s, forward_id),
            )

    def pending(self) -> int:
        with self._db() as conn:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
