"""How big the embedded ledger's file grows under steady traffic, with and without pruning.

Runs reserve+commit lifecycles over HTTP (http.client, keep-alive) against a LocalCyclesServer
whose ledger clock is simulated, so DAYS days of traffic pass in seconds, and prints the
database and WAL sizes and the rows kept, once without pruning (a replay window longer than
the run) and once with the given window. The server's own background thread does the pruning
and checkpoints, as in production use.

    .venv/bin/python bench/bench_ledger_growth.py [--calls 4000] [--days 8] [--window-days 1]

BENCH_LOCALCYCLES_SRC=<dir holding a localcycles/ package> measures another copy (a copy
without pruning runs only the first row).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "{{cookiecutter.project_slug}}", "src")
sys.path.insert(0, os.path.abspath(os.environ.get("BENCH_LOCALCYCLES_SRC") or SOURCE))

from localcycles import LocalCyclesServer  # noqa: E402

DAY_MS = 86_400_000
UNIT = "USD_MICROCENTS"


class SimulatedClock:
    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        with self._lock:
            self.now_ms += ms


def call(conn: http.client.HTTPConnection, key: str, path: str, body: dict[str, object]) -> dict:
    conn.request(
        "POST",
        path,
        json.dumps(body),
        {"X-Cycles-API-Key": key, "Content-Type": "application/json"},
    )
    reply = conn.getresponse()
    data = json.loads(reply.read())
    assert reply.status == 200, data
    return data


def run(calls: int, days: float, window_days: float | None) -> dict[str, object]:
    workdir = tempfile.mkdtemp(prefix="bench-growth-")
    db = os.path.join(workdir, "ledger.sqlite3")
    clock = SimulatedClock()
    server = LocalCyclesServer(db, clock=clock)
    prunes = hasattr(server.ledger, "replay_window_days")
    if prunes:
        server.ledger.replay_window_days = window_days or days * 10
    elif window_days is not None:
        server.ledger.close()
        return {}
    server.ledger.create_tenant("bench")
    key = server.ledger.create_api_key("bench")
    server.ledger.set_budget("tenant:bench", UNIT, allocated=10**15)
    server.start()
    conn = http.client.HTTPConnection(server.host, server.port)
    step = int(days * DAY_MS / calls)
    wal = db + "-wal"
    peak_wal = 0
    started = time.perf_counter()
    for done in range(calls):
        if done % 100 == 0 and os.path.exists(wal):
            peak_wal = max(peak_wal, os.path.getsize(wal))
        reservation = call(
            conn,
            key,
            "/v1/reservations",
            {
                "idempotency_key": uuid.uuid4().hex,
                "subject": {"tenant": "bench", "workspace": "prod", "app": "bench"},
                "action": {"kind": "llm.completion", "name": "bench-model"},
                "estimate": {"unit": UNIT, "amount": 1_000},
            },
        )
        call(
            conn,
            key,
            f"/v1/reservations/{reservation['reservation_id']}/commit",
            {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": 900}},
        )
        clock.advance(step)
    elapsed = time.perf_counter() - started
    time.sleep(1.5)  # let the background thread run its last prune and checkpoint
    conn.close()
    server.stop()
    with server.ledger.db.read() as c:
        counts = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("reservations", "idempotency")}  # fmt: skip
    server.ledger.close()
    return {
        "window": f"{window_days:g} d" if window_days else "none",
        "db_kb": os.path.getsize(db) // 1024,
        "wal_kb": (os.path.getsize(wal) if os.path.exists(wal) else 0) // 1024,
        "peak_wal_kb": peak_wal // 1024,
        "reservations": counts["reservations"],
        "idempotency": counts["idempotency"],
        "calls_per_s": round(calls / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--days", type=float, default=8.0)
    parser.add_argument("--window-days", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{args.calls} reserve+commit lifecycles over {args.days:g} simulated days")
    print(
        f"{'pruning':>10} {'db KiB':>8} {'WAL KiB':>8} {'peak WAL':>9} "
        f"{'reservations':>13} {'idempotency':>12} {'calls/s':>8}"
    )
    for window in (None, args.window_days):
        row = run(args.calls, args.days, window)
        if row:
            print(
                f"{row['window']:>10} {row['db_kb']:>8} {row['wal_kb']:>8} "
                f"{row['peak_wal_kb']:>9} {row['reservations']:>13} {row['idempotency']:>12} "
                f"{row['calls_per_s']:>8}"
            )


if __name__ == "__main__":
    main()
