"""Bounded growth: idempotency records and finished reservations go after the replay window.

Time is the ledger's injected clock: the loop below covers days of traffic in a second.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from localcycles import LocalLedger
from localcycles.ledger.rows import payload_hash
from localcycles.process import main
from localcycles.protocol.validation import commit, reservation
from support.localcycles_kit import LC_TENANT, LC_UNIT, FakeClock, reservation_body

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@pytest.fixture
def ledger(tmp_path: Path, lc_clock: FakeClock) -> Any:
    ledger = LocalLedger(str(tmp_path / "growth.sqlite3"), clock=lc_clock, replay_window_days=1)
    ledger.create_tenant(LC_TENANT)
    ledger.set_budget("tenant:acme", allocated=10**15)
    yield ledger
    ledger.close()


def reserve(ledger: LocalLedger, body: dict[str, Any]) -> dict[str, Any]:
    return ledger.reserve(LC_TENANT, reservation(body), payload_hash(body))


def lifecycle(ledger: LocalLedger) -> None:
    """One guarded call: reserve, then commit a little less."""
    rid = reserve(ledger, reservation_body(100))["reservation_id"]
    body = {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": LC_UNIT, "amount": 90}}
    ledger.commit(LC_TENANT, rid, commit(body), payload_hash(body))


def file_size(ledger: LocalLedger) -> int:
    wal = ledger.path + "-wal"
    return os.path.getsize(ledger.path) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def rows(ledger: LocalLedger, table: str) -> int:
    with ledger.db.read() as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_the_file_stays_bounded_under_a_long_loop(ledger: LocalLedger, lc_clock: FakeClock) -> None:
    per_day, days = 200, 6
    sizes = []
    for _day in range(days):
        for call in range(per_day):
            lifecycle(ledger)
            lc_clock.advance(DAY_MS // per_day)
            if call % 50 == 49:
                ledger.prune()
        sizes.append(file_size(ledger))
    # Two days in, the window (one day) holds as many calls as it ever will: from then on
    # pruning frees as much as the traffic adds. Without it the file grows ~4x more.
    assert max(sizes[2:]) <= sizes[1] * 1.2 + 65_536, sizes
    assert rows(ledger, "reservations") <= per_day + 50
    assert rows(ledger, "idempotency") <= per_day + 50
    budget = ledger.budget("tenant:acme") or {}
    assert budget["spent"] == per_day * days * 90 and budget["reserved"] == 0


def test_a_replay_inside_the_window_still_replays(ledger: LocalLedger, lc_clock: FakeClock) -> None:
    body = reservation_body(100, key="retry-me")
    first = reserve(ledger, body)
    lc_clock.advance(DAY_MS - HOUR_MS)
    for _ in range(10):
        lifecycle(ledger)  # traffic, so the prune has something to do
    lc_clock.advance(HOUR_MS // 2)
    ledger.prune()
    assert reserve(ledger, body)["reservation_id"] == first["reservation_id"]
    with ledger.db.read() as conn:
        made = conn.execute(
            "SELECT count(*) FROM reservations WHERE idempotency_key = 'retry-me'"
        ).fetchone()[0]
    assert made == 1  # the replay held nothing new (the first hold has long expired)
    assert (ledger.budget("tenant:acme") or {})["reserved"] == 0


def test_past_the_window_finished_calls_are_forgotten_but_live_holds_are_kept(
    ledger: LocalLedger, lc_clock: FakeClock
) -> None:
    done = reservation_body(100, key="finished")
    finished = reserve(ledger, done)["reservation_id"]
    ledger.release(LC_TENANT, finished, "r", payload_hash({"idempotency_key": "r"}))
    ledger.max_reservation_ttl_ms = 86_400_000  # a tenant allowed day-long holds
    live_body = reservation_body(100, key="live", ttl_ms=86_400_000)
    live = reserve(ledger, live_body)["reservation_id"]
    for _ in range(3):  # keep it alive past the window: 3 x 10 h extensions
        lc_clock.advance(9 * HOUR_MS)
        extend = {"idempotency_key": uuid.uuid4().hex, "extend_by_ms": 10 * HOUR_MS}
        ledger.extend(
            LC_TENANT, live, extend["idempotency_key"], 10 * HOUR_MS, payload_hash(extend)
        )
    assert ledger.prune() > 0
    again = reserve(ledger, done)
    assert again["reservation_id"] != finished  # the old record is gone: a new call
    assert reserve(ledger, live_body)["reservation_id"] == live
    with ledger.db.read() as conn:
        ids = {r[0] for r in conn.execute("SELECT reservation_id FROM reservations")}
    assert finished not in ids and live in ids


def test_the_window_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as exited:
            main(["--db", str(tmp_path / "x.sqlite3"), "--replay-window-days", bad])
        assert exited.value.code == 2
        assert "--replay-window-days" in capsys.readouterr().err
    with pytest.raises(ValueError):
        LocalLedger(str(tmp_path / "y.sqlite3"), replay_window_days=0)


def test_the_servers_background_thread_prunes_at_most_once_a_minute(
    ledger: LocalLedger, lc_clock: FakeClock
) -> None:
    assert ledger.db.maintenance == ledger.prune_if_due  # what the checkpoint thread runs
    lifecycle(ledger)
    lc_clock.advance(2 * DAY_MS)
    assert ledger.prune_if_due() == 2  # the reservation and its idempotency record
    ledger.replay_window_days = 10 / 86_400  # ten seconds, so the next call ages quickly
    lifecycle(ledger)
    lc_clock.advance(30_000)
    assert ledger.prune_if_due() == 0  # prunable, but the last prune was 30 s ago
    lc_clock.advance(30_001)
    assert ledger.prune_if_due() == 2
