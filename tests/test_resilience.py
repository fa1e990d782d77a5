"""Resilience of a generated project: crashes and outages in the middle of a guarded call.

Every process runs with this interpreter and ``PYTHONPATH=<bake>/src`` in its own process
group, killed in ``finally``. The slow LLM call is resilience_driver.GatedProvider (a
test-only stand-in, never part of a bake): it blocks until the test opens a gate, so the
tests act exactly while a reservation is held, without guessing sleeps. Every wait is
bounded.

- A gunicorn worker SIGKILLed mid-call leaves its hold behind; the ledger expires it after
  TTL + grace and the budget is whole again, nothing charged.
- Cycles stopped after the reservation and before the commit: the commit is kept as an
  unsettled charge on disk, and once Cycles is back (same port, same ledger file) the app's
  settler, or the next process', commits it exactly once: the ledger ends as if nothing
  happened.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from support.baking import Baker
from support.localhttp import free_port, http, wait_for

pytestmark = pytest.mark.slow

PACKAGE = "llm_service"
DRIVER = Path(__file__).parent / "support" / "resilience_driver.py"
DEV_AUTH = {"Authorization": "Bearer dev-key-acme"}  # the default bake: api_key auth
TTL_MS = 60_000  # CYCLES_RESERVATION_TTL_MS default
GRACE_MS = 5_000  # the protocol's default grace period after expiry


# --- helpers ---------------------------------------------------------------------------------


def baked_env(project: Path, workdir: Path, **extra: str) -> dict[str, str]:
    """A clean environment importing the bake (and the driver copied into ``workdir``)."""
    leaky = ("CYCLES_", "APP_ENV", "LLM_", "OPENAI_", "ANTHROPIC_", "TENANT", "FLASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaky)}
    path = os.pathsep.join([str(project / "src"), str(workdir)])
    return {**env, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1",
            "RESILIENCE_PACKAGE": PACKAGE, **extra}  # fmt: skip


def driver(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(workdir / DRIVER.name), *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def ledger_state(env: dict[str, str], workdir: Path, db: Path) -> dict[str, Any]:
    """The app tenant's budget and reservations, read by a LocalLedger on ``db``."""
    result = driver(env, workdir, "ledger", str(db))
    assert result.returncode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def spawn(args: list[str], env: dict[str, str], cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, text=True, start_new_session=True, **kwargs
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    """Signal ``proc``'s process group (SIGKILL if it does not exit in time); reap it."""
    if proc.returncode is not None:
        return  # already reaped: its group id may belong to someone else by now
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes appended to the yielded list are stopped (group-wide) on the way out."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def started_markers(gate: Path) -> list[Path]:
    return sorted(gate.glob("started-*"))


def unsettled(journal: Path) -> list[dict[str, Any]]:
    """The unsettled charges the app keeps in its journal folder (its settler's file)."""
    path = journal / "unsettled.sqlite3"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT reservation_id, stage, commit_body FROM charges").fetchall()
    return [{**row, "commit_body": json.loads(row["commit_body"])} for row in rows]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """tmp_path with the driver in it and an empty gate directory."""
    shutil.copy(DRIVER, tmp_path / DRIVER.name)
    (tmp_path / "gate").mkdir()
    return tmp_path


# --- kill -9 a worker mid-call ------------------------------------------------------------------


def test_a_worker_killed_mid_call_leaves_no_charge_once_its_hold_expires(
    bake: Baker, workdir: Path
) -> None:
    """gunicorn (2 workers x 2 threads) on the embedded ledger: SIGKILL the worker whose
    /chat is inside the provider call. Its hold stays until TTL + grace, then expires; the
    budget is whole again and nothing was charged."""
    project = bake()
    gate, db, port = workdir / "gate", workdir / "ledger.sqlite3", free_port()
    env = baked_env(
        project, workdir,
        APP_ENV="development", LLM_PROVIDER="fake", CYCLES_LOCAL_DB=str(db),
        CYCLES_JOURNAL_DIR=str(workdir / "journal"), RESILIENCE_GATE=str(gate),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / "gunicorn.log"

    def budget() -> dict[str, int]:
        status, body = http("GET", base + "/budget", headers=DEV_AUTH)
        assert status == 200, body
        (row,) = body["balances"]
        return {k: row[k] for k in ("allocated", "spent", "reserved", "remaining", "debt")}

    def healthy() -> bool:
        with suppress(OSError):
            return http("GET", base + "/healthz")[0] == 200
        assert server.poll() is None, log_path.read_text()
        return False

    with processes() as procs, log_path.open("w") as log:
        server = spawn(
            ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--threads", "2", "--graceful-timeout", "2", "resilience_driver:wsgi_app()"],
            env, workdir, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(server)
        wait_for(healthy, 30, "gunicorn to serve /healthz")
        before = budget()
        assert before["reserved"] == 0 and before["remaining"] > 0

        outcome: list[object] = []

        def call_chat() -> None:
            try:
                outcome.append(http("POST", base + "/chat", {"prompt": "hello"}, DEV_AUTH))
            except OSError as exc:  # the worker died under us: no HTTP answer at all
                outcome.append(exc)

        caller = threading.Thread(target=call_chat, daemon=True)
        caller.start()
        (marker,) = wait_for(lambda: started_markers(gate), 15, "the provider call to start")
        held = budget()
        assert held["reserved"] > 0, "the reservation is held during the provider call"
        assert held["remaining"] == before["remaining"] - held["reserved"]

        os.kill(int(marker.read_text()), signal.SIGKILL)
        caller.join(timeout=15)
        assert outcome and not isinstance(outcome[0], tuple), f"the call was answered: {outcome}"
        assert budget()["reserved"] == held["reserved"], "a crash releases nothing by itself"

        # Move the ledger's clock forward, short of when the hold lapses (with room for a
        # slow machine): it is still held ...
        (gate / "clock_offset_ms").write_text(str(TTL_MS + GRACE_MS - 20_000))
        assert budget()["reserved"] == held["reserved"], "held until TTL + grace"
        # ... and past it: the hold expired, the budget is whole, nothing charged.
        (gate / "clock_offset_ms").write_text(str(TTL_MS + GRACE_MS + 1_000))
        after = wait_for(lambda: (b := budget())["reserved"] == 0 and b, 20, "the hold to expire")
        assert after == before, "the hold expired: the budget is whole, nothing charged"
        (gate / "open").touch()  # let nothing hang at shutdown

    state = ledger_state(env, workdir, db)
    assert [r["status"] for r in state["reservations"]] == ["EXPIRED"]
    assert (state["budget"]["spent"], state["budget"]["reserved"]) == (0, 0)


# --- Cycles stopped between reservation and commit ------------------------------------------------


class CyclesOutage:
    """A standalone localcycles server process on a fixed port and ledger file."""

    def __init__(self, env: dict[str, str], workdir: Path, procs: list[Any]) -> None:
        self.env, self.workdir, self.procs = env, workdir, procs
        self.db = workdir / "cycles.sqlite3"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        proc = spawn(
            ["-m", "localcycles", "--db", str(self.db), "--port", str(self.port)],
            self.env, self.workdir, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the Cycles server did not start"
        assert proc.stdout.readline().strip() == self.base_url
        self.proc = proc

    def kill(self) -> None:
        assert self.proc is not None
        stop(self.proc, signal.SIGKILL)
        self.proc = None

    def reserved(self) -> int:
        """Reserved on the app tenant's budget, over Cycles' own HTTP API."""
        filters = {"tenant": "operator", "workspace": "acme"}  # the default bake (workspace)
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        status, body = http(
            "GET", f"{self.base_url}/v1/balances?{query}",
            headers={"X-Cycles-API-Key": "resilience-cycles-key"},
        )  # fmt: skip
        assert status == 200, body
        (row,) = [b for b in body["balances"] if b["scope"].endswith("workspace:acme")]
        return int(row["reserved"]["amount"])


def start_call(env: dict[str, str], workdir: Path, cycles: CyclesOutage, name: str) -> Any:
    """An in-process app (driver ``chat``) making one guarded call through ``cycles``."""
    result = workdir / f"{name}.json"
    proc = spawn(
        [str(workdir / DRIVER.name), "chat", cycles.base_url, str(workdir / "journal"),
         str(result)],
        env, workdir,
    )  # fmt: skip
    cycles.procs.append(proc)
    return proc, result


def pending_commit_during_an_outage(
    bake: Baker, workdir: Path, procs: list[Any]
) -> tuple[dict[str, str], CyclesOutage, Any, dict[str, Any], dict[str, Any]]:
    """Reserve, kill Cycles inside the provider call, let the call finish: the commit fails
    is kept on disk. Returns the env, the (stopped) server, the app process, the app's result
    and the unsettled charge."""
    project = bake()
    gate = workdir / "gate"
    env = baked_env(project, workdir, RESILIENCE_GATE=str(gate))
    cycles = CyclesOutage(env, workdir, procs)
    assert driver(env, workdir, "provision", str(cycles.db)).returncode == 0
    cycles.start()

    app, result_file = start_call(env, workdir, cycles, "first")
    wait_for(lambda: started_markers(gate), 15, "the provider call to start")
    assert cycles.reserved() > 0, "the reservation is held during the provider call"
    cycles.kill()
    (gate / "open").touch()

    wait_for(result_file.exists, 15, "the app to answer")
    result = json.loads(result_file.read_text())
    # The model ran and its spend is known: the caller gets the answer, the spend waits.
    assert result["status"] == 200, result
    assert result["body"]["cost_usd_microcents"] == result["cost"] > 0
    (record,) = wait_for(lambda: unsettled(workdir / "journal"), 5, "an unsettled charge")
    assert record["stage"] == "commit"
    assert record["commit_body"]["actual"]["amount"] == result["cost"]
    return env, cycles, app, result, record


def assert_settled_exactly(
    env: dict[str, str], workdir: Path, db: Path, spent: int, reservation_id: str
) -> None:
    state = ledger_state(env, workdir, db)
    budget = state["budget"]
    assert (budget["spent"], budget["reserved"], budget["debt"]) == (spent, 0, 0)
    assert budget["remaining"] == budget["allocated"] - spent
    statuses = {r["id"]: r["status"] for r in state["reservations"]}
    assert statuses[reservation_id] == "COMMITTED", statuses
    assert set(statuses.values()) == {"COMMITTED"}


def test_a_commit_lost_to_a_cycles_outage_is_retried_once_cycles_is_back(
    bake: Baker, workdir: Path
) -> None:
    """The app keeps running: its settler commits the unsettled spend as soon as Cycles
    answers again (restarted on the same port and ledger file)."""
    with processes() as procs:
        env, cycles, app, result, record = pending_commit_during_an_outage(bake, workdir, procs)
        cycles.start()
        assert app.wait(timeout=20) == 0, "the charge did not land"
        assert not unsettled(workdir / "journal")
        assert cycles.reserved() == 0
    assert_settled_exactly(env, workdir, cycles.db, result["cost"], record["reservation_id"])


def test_a_commit_lost_with_the_app_is_replayed_by_the_next_app_process(
    bake: Baker, workdir: Path
) -> None:
    """The app dies too before Cycles is back: the file on disk is all that is left. The
    next app process lands it once it talks to Cycles; both calls are charged exactly."""
    with processes() as procs:
        env, cycles, app, result, record = pending_commit_during_an_outage(bake, workdir, procs)
        stop(app, signal.SIGKILL)
        assert len(unsettled(workdir / "journal")) == 1, "the spend survives only on disk"
        cycles.start()

        # The gate is open: this call goes straight through; its app lands the charge.
        second, second_file = start_call(env, workdir, cycles, "second")
        assert second.wait(timeout=20) == 0, "the charge did not land"
        second_result = json.loads(second_file.read_text())
        assert second_result["status"] == 200, second_result
        assert not unsettled(workdir / "journal")
    spent = result["cost"] + second_result["cost"]
    assert_settled_exactly(env, workdir, cycles.db, spent, record["reservation_id"])
