"""The WAL checkpoint thread: request connections skip checkpoints only while it runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from localcycles.ledger.db import Database

#: SQLite's own default (pages): a commit that leaves the WAL this long checkpoints it.
SQLITE_DEFAULT_AUTOCHECKPOINT = 1000


def autocheckpoint(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_stopping_the_checkpointer_gives_checkpoints_back_to_the_connections(
    tmp_path: Path,
) -> None:
    # A ledger used in-process after its server stopped (tests, the CLI) has no thread
    # checkpointing the WAL any more; unless its connections do it again, the WAL grows
    # with every write for the life of the process.
    db = Database(tmp_path / "ledger.sqlite3")
    try:
        with db.read() as reader, db.write() as writer:
            assert autocheckpoint(reader) == autocheckpoint(writer) == SQLITE_DEFAULT_AUTOCHECKPOINT

        stop = db.start_checkpointer(interval_s=3600)  # the thread itself never fires here
        with db.read() as reader, db.write() as writer:
            # The thread checkpoints; a request must never pay for one.
            assert autocheckpoint(reader) == autocheckpoint(writer) == 0

        db.stop_checkpointer(stop)
        # The same pooled connections, and a fresh one opened beside them, checkpoint again.
        with db.read() as reader, db.read() as fresh, db.write() as writer:
            assert reader is not fresh
            for conn in (reader, fresh, writer):
                assert autocheckpoint(conn) == SQLITE_DEFAULT_AUTOCHECKPOINT
    finally:
        db.close()
