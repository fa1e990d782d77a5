"""SQLite plumbing: schema, connection pool and the one-transaction-per-mutation helper.

Concurrency model: every mutation runs in one ``BEGIN IMMEDIATE`` transaction, which takes
SQLite's single write lock up front, so a read-check-write sequence can never interleave with
another writer in this or any other process. Inside one process, writers additionally queue
on a ``threading.Lock`` first: SQLite's busy handler polls with sleeps, a mutex hands over
immediately. Across processes ``busy_timeout`` does the waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__.rsplit(".", 1)[0])

SCHEMA_VERSION = 2
#: WAL size past which the checkpoint thread starts the WAL over (see start_checkpointer).
WAL_RESTART_BYTES = 16 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS budgets (
    scope TEXT NOT NULL,
    unit TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    ledger_id TEXT NOT NULL,
    allocated INTEGER NOT NULL,
    spent INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    debt INTEGER NOT NULL DEFAULT 0,
    overdraft_limit INTEGER NOT NULL DEFAULT 0,
    is_over_limit INTEGER NOT NULL DEFAULT 0,
    commit_overage_policy TEXT,
    caps TEXT,
    status TEXT NOT NULL DEFAULT 'ACTIVE',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, unit)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS budgets_tenant ON budgets (tenant_id, scope);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    unit TEXT NOT NULL,
    amount INTEGER NOT NULL,
    scope_path TEXT NOT NULL,
    affected_scopes TEXT NOT NULL,
    budgeted_scopes TEXT NOT NULL,
    overage_policy TEXT NOT NULL,
    idempotency_key TEXT,
    metadata TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    grace_ms INTEGER NOT NULL,
    extension_count INTEGER NOT NULL DEFAULT 0,
    committed INTEGER,
    finalized_at_ms INTEGER,
    final_key TEXT,
    final_hash TEXT,
    final_response TEXT,
    committed_metadata TEXT,
    committed_metrics TEXT
);
CREATE INDEX IF NOT EXISTS reservations_tenant ON reservations (tenant_id, created_at_ms);
-- Lazy expiry looks only at live holds whose grace has run out.
CREATE INDEX IF NOT EXISTS reservations_live
    ON reservations (expires_at_ms + grace_ms) WHERE status = 'ACTIVE';
-- Retention deletes finished reservations by age.
CREATE INDEX IF NOT EXISTS reservations_finished
    ON reservations (coalesce(finalized_at_ms, expires_at_ms + grace_ms)) WHERE status != 'ACTIVE';
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    reservation_id TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, endpoint, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency (created_at_ms);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    scope_path TEXT NOT NULL,
    unit TEXT NOT NULL,
    amount INTEGER NOT NULL,
    charged INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
"""

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _enable_wal(conn: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch a new file to WAL. The switch needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy handler, when another process (a second
    gunicorn worker starting on a fresh ledger) is opening the file at the same moment."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _connect(path: str, autocheckpoint: bool) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    # NORMAL is durable against application crashes under WAL; only an OS crash or power
    # loss can lose the last transactions. Right for a dev/test ledger, and much faster.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA temp_store = MEMORY")
    # After a checkpoint the WAL is reused from its start but keeps its size on disk;
    # this truncates it back whenever it has grown past 4 MiB.
    conn.execute("PRAGMA journal_size_limit = 4194304")
    if not autocheckpoint:
        # A checkpoint fsyncs the database; the server runs them from a background thread
        # instead of in whichever request happens to cross the WAL size threshold.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.row_factory = sqlite3.Row
    return conn


class Database:
    """Connections to one SQLite file, shared by all threads of a process.

    Writes go through one dedicated connection, used only under the process write lock: its
    page cache then stays valid from one transaction to the next (SQLite drops a
    connection's cache whenever another connection has written since its last use), and a
    write never waits for a pooled connection. Reads take the most recently returned idle
    connection (a LIFO stack), so a few warm connections serve most of them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.autocheckpoint = True
        #: Run by the checkpoint thread between checkpoints (the ledger's pruning).
        self.maintenance: Callable[[], object] | None = None
        self._modes: dict[int, bool] = {}
        self.path = os.path.abspath(os.fspath(path))
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._idle: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._idle_guard = threading.Lock()  # _idle against close()
        self._write_lock = _process_lock(self.path)
        self._closed = False
        with self.read() as conn:
            # WAL lets readers run while one writer commits, in this and other processes.
            # Small pages: each commit rewrites every page it touches into the WAL.
            conn.execute("PRAGMA page_size = 1024")
            _enable_wal(conn)
            # Files from schema 1 lack this column; add it before the schema's indexes.
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(reservations)")}
            if columns and "committed_metrics" not in columns:
                with contextlib.suppress(sqlite3.OperationalError):  # another process did
                    conn.execute("ALTER TABLE reservations ADD COLUMN committed_metrics TEXT")
            # CREATE ... IF NOT EXISTS is idempotent, so processes may race here safely.
            conn.executescript(SCHEMA)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self.path, self.autocheckpoint)
        self._modes[id(conn)] = self.autocheckpoint
        return conn

    def _sync_mode(self, conn: sqlite3.Connection) -> None:
        if self._modes.get(id(conn)) != self.autocheckpoint:
            # The checkpointer was started or stopped since this connection last ran.
            pages = 1000 if self.autocheckpoint else 0
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            self._modes[id(conn)] = self.autocheckpoint

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode: each SELECT sees a consistent snapshot."""
        try:
            conn = self._idle.pop()  # list.pop/append are atomic under the GIL
        except IndexError:
            conn = self._open()
        self._sync_mode(conn)
        try:
            yield conn
        finally:
            with self._idle_guard:
                if self._closed:  # close() ran meanwhile: it left this connection to us
                    conn.close()
                else:
                    self._idle.append(conn)

    # (thread id, connection) of the open group_commit() block, if any.
    _group: tuple[int, sqlite3.Connection] | None = None

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """Group commit (the HTTP front end's): this thread's ``write()`` calls inside the block
        share one transaction, committed once as the block exits (raising if that fails).

        Each ``write()`` inside is a savepoint, so an error undoes only its own changes. Reads
        through ``read()`` do not see the block's uncommitted writes: an operation computes
        its answer inside its ``write()``. Send the answers only after the block has exited.
        """
        with self.write() as conn:
            self._group = (threading.get_ident(), conn)
            try:
                yield
            finally:
                self._group = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; commits on success, rolls back on any error."""
        group = self._group
        if group is not None and group[0] == threading.get_ident():
            shared = group[1]  # inside group_commit(): a savepoint of its transaction
            shared.execute("SAVEPOINT request")
            try:
                yield shared
            except BaseException:
                shared.execute("ROLLBACK TO request")
                shared.execute("RELEASE request")
                raise
            shared.execute("RELEASE request")
            return
        with self._write_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            conn = self._writer
            if conn is None:
                conn = self._writer = self._open()
            self._sync_mode(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def start_checkpointer(self, interval_s: float = 0.5) -> threading.Event:
        """Checkpoint the WAL from a daemon thread; request connections then skip it.

        Returns the Event that stops the thread. PASSIVE checkpoints never block writers, but
        under steady writes they rarely finish at a moment when SQLite can start the WAL over,
        so it keeps growing; once it passes ``WAL_RESTART_BYTES`` a TRUNCATE checkpoint runs
        between two of this process's write transactions (a pause of a few milliseconds).
        """
        stop = threading.Event()
        self.autocheckpoint = False

        def loop() -> None:
            conn = _connect(self.path, autocheckpoint=False)
            # Never wait long for another process's writer: the next round tries again.
            conn.execute("PRAGMA busy_timeout = 200")
            try:
                while not stop.wait(interval_s):
                    self._checkpoint(conn)
                    if self.maintenance is not None and not self._closed:
                        try:
                            self.maintenance()
                        except sqlite3.Error:
                            if self._closed:  # closed while pruning: nothing left to do
                                return
                            log.exception("localcycles: maintenance failed; retrying later")
            finally:
                conn.close()

        threading.Thread(target=loop, name="localcycles-checkpoint", daemon=True).start()
        return stop

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        try:
            grown = os.path.getsize(self.path + "-wal") > WAL_RESTART_BYTES
        except OSError:
            return
        if grown:
            with self._write_lock:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def stop_checkpointer(self, stop: threading.Event) -> None:
        stop.set()
        self.autocheckpoint = True

    def close(self) -> None:
        """Close the writer and the idle connections; a reader's is closed as it comes back.

        Closing a connection while another thread runs a statement on it can crash SQLite's
        C library (the maintenance thread may be pruning, a request may be reading), so the
        writer is closed under the write lock and a connection in use is never touched here.
        """
        with self._write_lock, self._idle_guard:
            self._closed = True
            idle, self._idle = self._idle, []
            writer, self._writer = self._writer, None
        for conn in [*idle, *([writer] if writer is not None else [])]:
            conn.close()
