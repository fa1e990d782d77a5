"""Atomicity under contention: threads on one server, and two server processes on one file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runcycles import CyclesClient

from localcycles import LocalLedger, spawn_server_process
from localcycles.ledger.db import Database
from support.localcycles_kit import LC_UNIT, reservation_body

THREADS = 16
ATTEMPTS = 5  # per thread
WINNERS = 20  # the budget covers exactly this many holds
AMOUNT = 100
SUBJECT = {"tenant": "acme", "workspace": "prod"}


def race(clients: list[CyclesClient]) -> Counter[int]:
    """16 threads reserve concurrently (round-robin over clients); returns status counts."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        client = clients[n % len(clients)]
        start.wait()
        for _ in range(ATTEMPTS):
            resp = client.create_reservation(reservation_body(AMOUNT, subject=SUBJECT))
            with lock:
                statuses[resp.status] += 1
            if resp.status == 409:
                assert resp.body["error"] == "BUDGET_EXCEEDED"

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def assert_exhausted_exactly(ledger: LocalLedger) -> None:
    for scope in ("tenant:acme", "tenant:acme/workspace:prod"):
        row = ledger.budget(scope, LC_UNIT)
        assert row is not None
        assert row["reserved"] == WINNERS * AMOUNT
        assert row["remaining"] == row["allocated"] - WINNERS * AMOUNT >= 0


def test_sixteen_threads_get_exactly_the_budget(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=1_000_000)
    lc_ledger.set_budget("tenant:acme/workspace:prod", allocated=WINNERS * AMOUNT)
    statuses = race([lc_client])
    assert statuses == Counter({200: WINNERS, 409: THREADS * ATTEMPTS - WINNERS})
    assert_exhausted_exactly(lc_ledger)
    assert (lc_ledger.budget("tenant:acme/workspace:prod") or {})["remaining"] == 0


@pytest.fixture
def shared_file(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A provisioned ledger file and an API key; no server of its own."""
    path = str(tmp_path / "shared.sqlite3")
    ledger = LocalLedger(path)
    ledger.create_tenant("acme")
    key = ledger.create_api_key("acme")
    ledger.set_budget("tenant:acme", allocated=WINNERS * AMOUNT)
    ledger.set_budget("tenant:acme/workspace:prod", allocated=10**9)
    ledger.close()
    yield path, key


def test_two_server_processes_on_one_file_get_exactly_the_budget(
    shared_file: tuple[str, str], lc_client_factory: Callable[..., CyclesClient]
) -> None:
    path, key = shared_file
    procs = [spawn_server_process(path) for _ in range(2)]
    try:
        clients = [lc_client_factory(key, base_url=url) for _, url in procs]
        statuses = race(clients)
        assert statuses == Counter({200: WINNERS, 409: THREADS * ATTEMPTS - WINNERS})
        # A hold made through one process is visible to (and committable through) the other.
        listed = clients[1].list_reservations(status="ACTIVE", limit="200")
        assert len(listed.body["reservations"]) == WINNERS
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
    ledger = LocalLedger(path)
    try:
        assert_exhausted_exactly(ledger)
        assert (ledger.budget("tenant:acme") or {})["remaining"] == 0
    finally:
        ledger.close()


def test_close_leaves_a_connection_in_use_to_its_reader(tmp_path: Path) -> None:
    """Closing a connection another thread is running a statement on can crash SQLite's
    C library: close() never touches one in use, the reader's is closed as it comes back."""
    db = Database(tmp_path / "ledger.sqlite3")
    with db.read() as conn:
        db.close()
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_close_waits_for_a_write_in_progress_and_later_writes_refuse(tmp_path: Path) -> None:
    db = Database(tmp_path / "ledger.sqlite3")
    events: list[str] = []
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.write() as conn:
            writing.set()
            release.wait()
            conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        events.append("committed")

    def closer() -> None:
        db.close()
        events.append("closed")

    write_thread = threading.Thread(target=writer, daemon=True)
    write_thread.start()
    writing.wait()
    close_thread = threading.Thread(target=closer, daemon=True)
    close_thread.start()
    close_thread.join(0.2)
    went_ahead = not close_thread.is_alive()
    release.set()
    assert not went_ahead, "close() went ahead while a write was running"
    write_thread.join()
    close_thread.join()
    assert events == ["committed", "closed"]
    with pytest.raises(sqlite3.ProgrammingError), db.write():
        pass


OPEN_FRESH_FILE = """
import sys, threading
from localcycles.ledger.db import Database
threading.Event().wait(float(sys.argv[2]) - __import__("time").time())
Database(sys.argv[1]).close()
"""


def test_processes_opening_a_fresh_file_at_once_all_start(tmp_path: Path) -> None:
    """Two gunicorn workers start on a ledger file that does not exist yet: the switch to
    WAL must not fail one of them with "database is locked"."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for round_ in range(5):
        path = tmp_path / f"fresh-{round_}.sqlite3"
        start_at = str(time.time() + 1.0)  # all import first, then open together
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_FRESH_FILE, str(path), start_at],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        errors = [p.communicate()[1] for p in procs if p.wait() != 0]
        assert errors == [], errors[0]
