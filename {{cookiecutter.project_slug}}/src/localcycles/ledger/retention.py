"""Bounded growth: forget idempotency records and finished reservations past the replay window.

Every call leaves an idempotency record and, for reservations, a row that stays after it is
committed, released or expired. Past the replay window (7 days unless configured) a retry
can no longer be told from a new request anyway, so both are deleted, in small batches (one
short write transaction each, so requests queue behind a batch, not behind the whole prune),
and the WAL is then checkpointed and truncated so the file on disk shrinks back too.
"""

from __future__ import annotations

import sqlite3

from .db import Database

DAY_MS = 86_400_000
DEFAULT_REPLAY_WINDOW_DAYS = 7.0
BATCH = 500

# A reservation still ACTIVE (extensions can keep one alive for days) keeps its idempotency
# records: a replayed reserve or extend must still find its reservation.
_IDEMPOTENCY_BATCH = """
DELETE FROM idempotency WHERE (tenant_id, endpoint, key) IN (
    SELECT i.tenant_id, i.endpoint, i.key FROM idempotency AS i
    WHERE i.created_at_ms < ?
      AND (i.reservation_id IS NULL OR NOT EXISTS (
          SELECT 1 FROM reservations AS r
          WHERE r.reservation_id = i.reservation_id AND r.status = 'ACTIVE'))
    LIMIT ?)
"""
_RESERVATION_BATCH = """
DELETE FROM reservations WHERE reservation_id IN (
    SELECT reservation_id FROM reservations
    WHERE status != 'ACTIVE' AND coalesce(finalized_at_ms, expires_at_ms + grace_ms) < ?
    LIMIT ?)
"""


def prune(db: Database, now_ms: int, window_ms: int, batch: int = BATCH) -> int:
    """Delete what is older than ``window_ms``; returns how many rows went."""
    cutoff = now_ms - window_ms
    removed = 0
    for statement in (_IDEMPOTENCY_BATCH, _RESERVATION_BATCH):
        while True:
            with db.write() as conn:
                count = conn.execute(statement, (cutoff, batch)).rowcount
            removed += count
            if count < batch:
                break
    if removed:
        checkpoint(db)
    return removed


def checkpoint(db: Database) -> None:
    """Copy the WAL into the database file and truncate the WAL, if nobody is in the way.

    A connection of its own that does not wait: a TRUNCATE checkpoint that waited would hold
    up writers for as long; a busy one gives up and the next prune tries again.
    """
    conn = sqlite3.connect(db.path, isolation_level=None, timeout=0)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()
