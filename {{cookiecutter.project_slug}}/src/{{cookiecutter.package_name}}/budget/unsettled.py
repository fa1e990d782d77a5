"""What the ledger has not taken yet, kept on disk: unsettled charges and live streams.

Two kinds of record live in one SQLite file under ``CYCLES_JOURNAL_DIR`` (the instance
folder by default), shared by every worker process of the host:

* a **charge** is spend that happened but has not reached Cycles: a commit that got no
  answer, or a spend event (shadow mode, fail-open, a hold that lapsed). It stays here until
  Cycles takes it (settler.py retries it, with no limit on attempts), so neither a long
  outage nor a restart loses it; ``covered_until_ms`` says until when its own hold still
  holds the amount, after which it counts against the tenant's new reservations.
* a **stream** record says what a live stream would owe if its process died now: at least
  the cost of what it has sent. It is written before the output it covers goes out and
  removed when the stream settles. A process that finds another's streams after that
  process died (its lock file is free again) turns them into charges.

Each process holds an exclusive ``flock`` on ``owners/<owner>.lock`` while it lives: the
kernel drops it when the process ends, even by ``kill -9``, so "is that owner dead" needs no
clock and no heartbeat.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError

FILE_NAME = "unsettled.sqlite3"
OPEN_ATTEMPTS = 20

# commit: commit the reservation; event: record a spend event, as debt where the budget
# allows; available: the budget had no overdraft room, record what it has left.
Stage = Literal["commit", "event", "available"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    amount INTEGER NOT NULL,
    reservation_id TEXT,
    covered_until_ms INTEGER NOT NULL,
    stage TEXT NOT NULL,
    commit_body TEXT,
    event_body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_tenant ON charges (tenant);
CREATE TABLE IF NOT EXISTS streams (
    reservation_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    tenant TEXT NOT NULL,
    amount INTEGER NOT NULL,
    covered_until_ms INTEGER NOT NULL,
    commit_body TEXT NOT NULL,
    event_body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Charge:
    """One unsettled charge, as the store keeps it."""

    key: str  # the idempotency key of its commit (and of its spend event)
    tenant: str
    amount: int
    reservation_id: str | None  # None: a spend event with no hold behind it
    covered_until_ms: int  # its hold holds the amount until then (0: never did)
    stage: Stage
    commit_body: dict[str, Any] | None
    event_body: dict[str, Any]
    attempts: int


def _charge(row: tuple[Any, ...], *, attempts: int) -> Charge:
    """A charge from a row that starts key, tenant, amount, reservation_id, covered_until_ms,
    stage, commit_body, event_body (bodies as JSON text); ``attempts`` as the caller counts."""
    return Charge(
        key=row[0],
        tenant=row[1],
        amount=row[2],
        reservation_id=row[3],
        covered_until_ms=row[4],
        stage=row[5],
        commit_body=None if row[6] is None else json.loads(row[6]),
        event_body=json.loads(row[7]),
        attempts=attempts,
    )


class UnsettledStore:
    """The SQLite file of one host's unsettled charges and live streams (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._owner: tuple[int, str, int] | None = None  # (pid, owner id, lock fd)

    # --- connection and ownership ------------------------------------------------------

    @contextlib.contextmanager
    def _db(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """The connection, in a write transaction (or, ``write=False``, for one read: no
        write lock, so the check every reservation makes never waits on other workers)."""
        with self._lock:
            if self._conn is None or self._conn_pid != os.getpid():
                # A connection is never shared with a forked child (a gunicorn worker).
                self._conn, self._conn_pid = self._open(), os.getpid()
            conn = self._conn
            if not write:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _open(self) -> sqlite3.Connection:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            # Durable against a process crash (what this file is for) without an fsync per
            # write; only an OS crash may lose the last moments.
            conn.execute("PRAGMA synchronous = NORMAL")
            for attempt in range(OPEN_ATTEMPTS):
                try:
                    # Setting up a new file is not waited for like a write: a worker that
                    # opens it while another sets it up may be told "locked" at once.
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError:
                    if attempt + 1 == OPEN_ATTEMPTS:
                        raise
                    time.sleep(0.05)
        except (OSError, sqlite3.Error) as exc:
            # Without this file no charge may be kept: refuse (503), naming the setting.
            raise ConfigError(
                f"CYCLES_JOURNAL_DIR={self.directory}: cannot keep unsettled charges there ({exc})"
            ) from exc
        return conn

    def owner(self) -> str:
        """This process' owner id, holding its lock file (made anew after a fork)."""
        pid = os.getpid()
        with self._lock:
            if self._owner is None or self._owner[0] != pid:
                self._owner = (pid, *self._lock_new_owner())
            return self._owner[1]

    def _lock_new_owner(self) -> tuple[str, int]:
        owners = self.directory / "owners"
        name = uuid.uuid4().hex
        # Locked under a name no sweep looks at, then moved into place: another process
        # never finds this owner's lock file unlocked.
        draft = owners / f"{name}.new"
        try:
            owners.mkdir(parents=True, exist_ok=True)
            fd = os.open(draft, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            draft.rename(owners / f"{name}.lock")
        except OSError as exc:
            raise ConfigError(f"CYCLES_JOURNAL_DIR={self.directory}: {exc}") from exc
        return name, fd

    def close(self) -> None:
        """Close the file; this process' streams stay, for whoever finds them orphaned."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._owner is not None and self._owner[0] == os.getpid():
                os.close(self._owner[2])  # releases the lock: our streams are orphans now
            self._owner = None

    # --- charges -------------------------------------------------------------------------

    def add(self, charge: Charge, *, first_attempt_ms: int) -> None:
        """Keep ``charge`` until :meth:`remove` (a second add of the same key is ignored)."""
        with self._db() as db:
            _insert(db, charge, first_attempt_ms)

    def has_charges(self, tenant: str) -> bool:
        with self._db(write=False) as db:
            row = db.execute("SELECT 1 FROM charges WHERE tenant = ? LIMIT 1", (tenant,))
            return row.fetchone() is not None

    def uncovered(self, tenant: str, at_ms: int) -> tuple[int, int, int | None]:
        """``tenant``'s charges no hold covers at ``at_ms``: (count, total, next attempt)."""
        with self._db(write=False) as db:
            count, total, next_ms = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(amount), 0), MIN(next_attempt_ms) FROM charges "
                "WHERE tenant = ? AND covered_until_ms <= ?",
                (tenant, at_ms),
            ).fetchone()
        return int(count), int(total), None if next_ms is None else int(next_ms)

    def claim_due(
        self, at_ms: int, backoff_ms: int, tenant: str | None = None, uncovered_only: bool = False
    ) -> list[Charge]:
        """Charges due at ``at_ms``, oldest first; each is put off by ``backoff_ms`` (doubling
        per attempt), so another thread or process does not try it at the same time."""
        where = "next_attempt_ms <= ?"
        params: list[Any] = [at_ms]
        if tenant is not None:
            where += " AND tenant = ?"
            params.append(tenant)
        if uncovered_only:
            where += " AND covered_until_ms <= ?"
            params.append(at_ms)
        with self._db() as db:
            rows = db.execute(
                "SELECT key, tenant, amount, reservation_id, covered_until_ms, stage, "
                f"commit_body, event_body, attempts FROM charges WHERE {where} "
                "ORDER BY created_ms",
                params,
            ).fetchall()
            for row in rows:
                delay = min(backoff_ms * 2 ** min(int(row[8]), 16), MAX_BACKOFF_MS)
                db.execute(
                    "UPDATE charges SET attempts = attempts + 1, next_attempt_ms = ? WHERE key = ?",
                    (at_ms + delay, row[0]),
                )
        return [_charge(row, attempts=row[8] + 1) for row in rows]

    def next_due_ms(self) -> int | None:
        with self._db(write=False) as db:
            (value,) = db.execute("SELECT MIN(next_attempt_ms) FROM charges").fetchone()
        return None if value is None else int(value)

    def advance(self, key: str, stage: Stage) -> None:
        """``key`` moves on to ``stage`` (its hold lapsed; or no overdraft room was left)."""
        with self._db() as db:
            db.execute("UPDATE charges SET stage = ? WHERE key = ?", (stage, key))

    def retry_at(self, key: str, at_ms: int) -> None:
        with self._db() as db:
            db.execute("UPDATE charges SET next_attempt_ms = ? WHERE key = ?", (at_ms, key))

    def remove(self, key: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM charges WHERE key = ?", (key,))

    def charges(self) -> list[tuple[str, int]]:
        """(tenant, amount) of every unsettled charge (for operators and tests)."""
        with self._db(write=False) as db:
            rows = db.execute("SELECT tenant, amount FROM charges ORDER BY created_ms")
            return [(str(tenant), int(amount)) for tenant, amount in rows.fetchall()]

    # --- live streams --------------------------------------------------------------------

    def stream(self, charge: Charge) -> None:
        """Record (or raise) what the live stream of ``charge.reservation_id`` owes so far."""
        owner = self.owner()
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO streams (reservation_id, owner, key, tenant, amount, "
                "covered_until_ms, commit_body, event_body, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    charge.reservation_id,
                    owner,
                    charge.key,
                    charge.tenant,
                    charge.amount,
                    charge.covered_until_ms,
                    _dumps(charge.commit_body),
                    json.dumps(charge.event_body),
                    now_ms(),
                ),
            )

    def stream_ended(self, reservation_id: str) -> None:
        """The stream settled: charged, or kept as a charge under the same key."""
        with self._db() as db:
            db.execute("DELETE FROM streams WHERE reservation_id = ?", (reservation_id,))

    def adopt_orphans(self) -> list[Charge]:
        """Turn the streams of processes that died into charges; the ones adopted."""
        mine = self.owner()
        with self._db(write=False) as db:
            owners = {str(row[0]) for row in db.execute("SELECT DISTINCT owner FROM streams")}
        # Lock files of processes that ended (with or without streams) are swept too.
        owners.update(path.stem for path in (self.directory / "owners").glob("*.lock"))
        owners.discard(mine)
        adopted: list[Charge] = []
        for owner in sorted(owners):
            lock = self.directory / "owners" / f"{owner}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive: its streams are its own business
                adopted.extend(self._adopt(owner))
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return adopted

    def _adopt(self, owner: str) -> list[Charge]:
        stamp = now_ms()
        with self._db() as db:
            # Selected in the column order of a charge row: an adopted stream is a commit
            # not tried yet.
            rows = db.execute(
                "SELECT key, tenant, amount, reservation_id, covered_until_ms, 'commit', "
                "commit_body, event_body, 0 FROM streams WHERE owner = ?",
                (owner,),
            ).fetchall()
            for row in rows:
                db.execute(
                    "INSERT OR IGNORE INTO charges (key, tenant, amount, reservation_id, "
                    "covered_until_ms, stage, commit_body, event_body, attempts, "
                    "next_attempt_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, stamp, stamp),
                )
            db.execute("DELETE FROM streams WHERE owner = ?", (owner,))
        return [_charge(row, attempts=0) for row in rows]


# A charge that keeps failing is tried at least this often (it blocks its tenant until then).
MAX_BACKOFF_MS = 5_000


def _dumps(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


def _insert(db: sqlite3.Connection, charge: Charge, first_attempt_ms: int) -> None:
    db.execute(
        "INSERT OR IGNORE INTO charges (key, tenant, amount, reservation_id, "
        "covered_until_ms, stage, commit_body, event_body, attempts, next_attempt_ms, "
        "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            charge.key,
            charge.tenant,
            charge.amount,
            charge.reservation_id,
            charge.covered_until_ms,
            charge.stage,
            _dumps(charge.commit_body),
            json.dumps(charge.event_body),
            charge.attempts,
            first_attempt_ms,
            now_ms(),
        ),
    )
