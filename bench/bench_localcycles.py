"""Benchmark the embedded local Cycles server with the real runcycles client.

Reports reserve+commit latency (p50/p99) and lifecycles/s with 1 and 16 client threads, and,
against the same server in the same run, an empty HTTP round trip (GET /healthz through an
httpx client configured like runcycles') as the floor, with the ratios. The 16 client threads
run in one process, then spread over 2 and 4 client processes, so the client's own CPU (GIL)
ceiling shows separately from the server's; the CPU columns give the client and server CPU
spent per operation. A lean stdlib http.client load gives the server's own capacity.

Side by side (issue 11): the same lean load against the shipped selector front end and the
thread-per-connection server it replaced (that server.py from commit THREADED_BASELINE over
this ledger, so only the HTTP layer and its group commit differ), alternating rounds, with the
ratios (other work on the machine moves them: the load average is printed); then each
server's thread count while TRICKLERS clients send their request heads a byte at a time, and
whether a normal client is still served meanwhile.

    /work/venv/bin/python bench/bench_localcycles.py [--seconds 4] [--in-process]
    /work/venv/bin/python bench/bench_localcycles.py --side-by-side-only [--rounds 5]

By default the server runs in its own process (as with `flask run` in a second terminal), so
client and server do not share one GIL; --in-process runs it in a thread of this process.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "{{cookiecutter.project_slug}}", "src")
# BENCH_LOCALCYCLES_SRC=<dir holding a localcycles/ package> benchmarks another copy (A/B runs).
sys.path.insert(0, os.path.abspath(os.environ.get("BENCH_LOCALCYCLES_SRC") or SOURCE))

import http.client  # noqa: E402
import json  # noqa: E402

import httpx  # noqa: E402
import localcycles  # noqa: E402
from localcycles import LocalCyclesServer, LocalLedger, spawn_server_process  # noqa: E402
from runcycles import CyclesClient, CyclesConfig  # noqa: E402

#: The last commit whose localcycles/server.py is the thread-per-connection server.
THREADED_BASELINE = "dc877c4f5043307708c97e045eb1abd14d43c4b9"
BASELINE_PATH = (
    "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}/localcycles/server.py"
)
TRICKLERS = 400

TENANT = "bench"
UNIT = "USD_MICROCENTS"
SUBJECT = {"tenant": TENANT, "workspace": "prod", "app": "bench"}
ACTION = {"kind": "llm.completion", "name": "bench-model"}


def make_client(url: str, key: str, journal: str) -> CyclesClient:
    return CyclesClient(
        CyclesConfig(
            base_url=url,
            api_key=key,
            retry_enabled=False,
            retry_flush_timeout=0,
            journal_dir=journal,
        )
    )


def lifecycle_with(client: CyclesClient) -> None:
    """One reserve + commit through the real runcycles client."""
    res = client.create_reservation(
        {
            "idempotency_key": uuid.uuid4().hex,
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": UNIT, "amount": 1000},
            "ttl_ms": 60_000,
        }
    )
    if res.status != 200:
        raise RuntimeError(f"reserve failed: {res.status} {res.body}")
    rid = res.body["reservation_id"]
    com = client.commit_reservation(
        rid, {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": 700}}
    )
    if com.status != 200:
        raise RuntimeError(f"commit failed: {com.status} {com.body}")


def process_cpu_s(pid: int | None) -> float:
    """User+system CPU seconds of a process (Linux /proc); 0.0 where unavailable."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_process(
    url: str, key: str, journal: str, threads: int, seconds: float, ready: Any, out: Any
) -> None:
    """A spawned client process: warm up, wait for the others, run, report."""
    client = make_client(url, key, journal)
    for _ in range(30):
        lifecycle_with(client)
    ready.wait()
    cpu0 = time.process_time()
    latencies, rate = run(threads, seconds, lambda: lifecycle_with(client))
    out.put((latencies, rate, time.process_time() - cpu0))
    client.close()


def run_spread(
    url: str, key: str, journal: str, processes: int, threads: int, seconds: float
) -> tuple[list[float], float, float]:
    """``threads`` runcycles client threads over ``processes`` client processes.

    Returns merged latencies (ms), total lifecycles/s and the clients' CPU seconds.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with live threads
    ready = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    children = [
        ctx.Process(
            target=client_process,
            args=(url, key, journal, threads // processes, seconds, ready, out),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    ready.wait(timeout=60)
    results = [out.get(timeout=seconds + 60) for _ in children]
    for child in children:
        child.join(timeout=10)
    merged = [x for latencies, _, _ in results for x in latencies]
    return merged, sum(rate for _, rate, _ in results), sum(cpu for _, _, cpu in results)


def seed_ledger(db: str) -> str:
    """A ledger with one well-funded tenant; returns its API key."""
    ledger = LocalLedger(db)
    ledger.create_tenant(TENANT)
    key = ledger.create_api_key(TENANT)
    ledger.set_budget(f"tenant:{TENANT}", UNIT, allocated=10**15)
    ledger.set_budget(f"tenant:{TENANT}/workspace:prod", UNIT, allocated=10**15)
    ledger.close()
    return key


class LeanClient:
    """The lean load: one stdlib http.client keep-alive connection per calling thread."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.headers = {"X-Cycles-API-Key": key, "Content-Type": "application/json"}
        self.local = threading.local()

    def conn(self) -> http.client.HTTPConnection:
        if not hasattr(self.local, "conn"):
            self.local.conn = http.client.HTTPConnection(*self.address, timeout=10)
        return self.local.conn  # type: ignore[no-any-return]

    def lifecycle(self) -> None:
        c = self.conn()
        reserve = {
            "idempotency_key": uuid.uuid4().hex,
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": UNIT, "amount": 1000},
        }
        c.request("POST", "/v1/reservations", json.dumps(reserve), self.headers)
        res = c.getresponse()
        rid = json.loads(res.read())["reservation_id"]
        commit = {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": 700}}
        c.request("POST", f"/v1/reservations/{rid}/commit", json.dumps(commit), self.headers)
        done = c.getresponse()
        done.read()
        if done.status != 200:
            raise RuntimeError(f"commit failed: {done.status}")

    def floor(self) -> None:
        c = self.conn()
        c.request("GET", "/healthz")
        c.getresponse().read()


def threaded_baseline(workdir: str) -> str | None:
    """A copy of this localcycles package with the thread-per-connection server.py.

    Returns the directory to put on PYTHONPATH, or None (with a note) outside a git checkout.
    """
    try:
        source = subprocess.run(
            ["git", "-C", HERE, "show", f"{THREADED_BASELINE}:{BASELINE_PATH}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"side by side skipped: no threaded baseline from git ({exc})")
        return None
    parent = os.path.join(workdir, "threaded")
    package = os.path.join(parent, "localcycles")
    here = os.path.dirname(os.path.abspath(localcycles.__file__))
    shutil.copytree(here, package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(package, "http", "server.py"), "w") as server:
        server.write(rebase_imports(source))
    return parent


#: Where the modules the flat threaded server.py imported live in the sub-package layout
#: (protocol/, ledger/, http/; the server goes to http/server.py), and renamed names.
BASELINE_IMPORTS = {
    "from .errors import CyclesError": "from ..protocol.errors import LedgerError as CyclesError",
    "from .ledger import ": "from ..ledger.local_ledger import ",
    "from .routes import ": "from .routes import ",
}


def rebase_imports(source: str) -> str:
    """The baseline server.py with its package-relative imports pointed at today's modules;
    an import it has that is not mapped above stops the run with its line named."""
    lines = []
    for line in source.splitlines(keepends=True):
        if line.startswith("from ."):
            prefix = next((old for old in BASELINE_IMPORTS if line.startswith(old)), None)
            if prefix is None:
                raise SystemExit(f"threaded baseline: no mapping for import {line.strip()!r}")
            line = BASELINE_IMPORTS[prefix] + line[len(prefix) :]
        lines.append(line)
    return "".join(lines)


def spawn_from(parent: str, db: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m localcycles`` from the package under ``parent``; returns (process, url)."""
    env = {**os.environ, "PYTHONPATH": parent}
    cmd = [sys.executable, "-m", "localcycles", "--db", db, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()  # printed once it accepts connections
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"server from {parent} did not start (got {url!r})")
    return proc, url


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def trickle(url: str, pid: int, clients: int, seconds: float) -> str:
    """``clients`` connections send a request head a byte every 0.25 s for ``seconds``.

    Returns a summary: the server's peak thread count, how the trickling clients were
    answered, and whether a normal client was served midway.
    """
    host, port = url.removeprefix("http://").split(":")
    head = b"POST /v1/reservations HTTP/1.1\r\nHost: bench\r\nX-Padding: " + b"a" * 400
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(clients)]
    for sock in socks:
        sock.setblocking(False)
    live, answered, closed, peak, step = list(socks), 0, 0, 0, 0
    normal = "not tried"
    began = time.monotonic()
    while time.monotonic() - began < seconds and live:
        for sock in list(live):
            try:
                reply = sock.recv(4096)
            except BlockingIOError:
                with contextlib.suppress(OSError):
                    sock.send(head[step : step + 1])
                continue
            except OSError:
                reply = b""
            live.remove(sock)
            if reply.startswith(b"HTTP/1.1 408"):
                answered += 1
            else:
                closed += 1
        step += 1
        peak = max(peak, thread_count(pid))
        if normal == "not tried" and time.monotonic() - began > seconds / 2:
            t0 = time.perf_counter()
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=5)
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
                conn.close()
                normal = f"served {status} in {(time.perf_counter() - t0) * 1000:.1f} ms"
            except OSError as exc:
                normal = f"NOT served ({exc})"
        time.sleep(0.25)
    for sock in socks:
        sock.close()
    return (
        f"peak {peak} threads; after {seconds:.0f} s {answered} answered 408, {closed} closed, "
        f"{len(live)} still held; a normal client midway: {normal}"
    )


def side_by_side(workdir: str, seconds: float, rounds: int) -> None:
    """The lean load against the threaded server and the selector front end, alternating."""
    baseline = threaded_baseline(workdir)
    if baseline is None:
        return
    shipped = os.path.dirname(os.path.dirname(os.path.abspath(localcycles.__file__)))
    servers: dict[str, tuple[subprocess.Popen[str], str, str]] = {}
    for name, parent in (("threaded", baseline), ("selector", shipped)):
        db = os.path.join(workdir, f"side-{name}.sqlite3")
        key = seed_ledger(db)
        proc, url = spawn_from(parent, db)
        servers[name] = (proc, url, key)
        run(4, 0.5, LeanClient(url, key).lifecycle)  # warm up
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nside by side, lean http.client load, 16 threads x 1 keep-alive connection, "
        f"{seconds:.0f} s per run (threaded = server.py of {THREADED_BASELINE[:7]}); "
        f"load average before: {load} on {os.cpu_count()} CPUs"
    )
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu_ms: dict[str, list[float]] = {name: [] for name in servers}
    for round_no in range(1, rounds + 1):
        for name, (proc, url, key) in servers.items():
            srv0 = process_cpu_s(proc.pid)
            latencies, rate = run(16, seconds, LeanClient(url, key).lifecycle)
            server_ms = (process_cpu_s(proc.pid) - srv0) * 1000 / max(1, len(latencies))
            rates[name].append(rate)
            cpu_ms[name].append(server_ms)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            print(
                f"  round {round_no} {name:<9} {rate:>6.0f} lifecycles/s  p50 {p50:6.2f} ms  "
                f"p99 {p99:6.2f} ms  server cpu {server_ms:.3f} ms/lifecycle"
            )
    ratios = [new / old for new, old in zip(rates["selector"], rates["threaded"], strict=True)]
    print(
        f"selector / threaded capacity: median {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); medians "
        f"{statistics.median(rates['selector']):.0f} vs {statistics.median(rates['threaded']):.0f}"
        " lifecycles/s"
    )
    new_cpu, old_cpu = statistics.median(cpu_ms["selector"]), statistics.median(cpu_ms["threaded"])
    print(
        f"server CPU per lifecycle: selector {new_cpu:.3f} ms vs threaded {old_cpu:.3f} ms, so "
        f"{old_cpu / new_cpu:.2f}x the lifecycles per server CPU second (the capacity ratio "
        "where the server, not the machine's other work, is the limit)"
    )
    print(f"{TRICKLERS} clients trickling a request head (a byte every 0.25 s) for 7 s:")
    for name, (proc, url, _) in servers.items():
        print(f"  {name:<9} {trickle(url, proc.pid, TRICKLERS, 7.0)}")
    for proc, _, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=10)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(threads: int, seconds: float, op: Callable[[], None]) -> tuple[list[float], float]:
    """Run ``op`` in ``threads`` threads for ``seconds``; return latencies (ms) and ops/s."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(bucket: list[float]) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            op()
            bucket.append((time.perf_counter() - t0) * 1000)

    workers = [threading.Thread(target=worker, args=(b,)) for b in latencies]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    merged = [x for b in latencies for x in b]
    return merged, len(merged) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0, help="per phase (7 phases)")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--rounds", type=int, default=5, help="side-by-side rounds per server")
    parser.add_argument(
        "--side-by-side-only", action="store_true", help="only threaded vs selector"
    )
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-localcycles-")
    if args.side_by_side_only:
        side_by_side(workdir, args.seconds, args.rounds)
        return
    db = os.path.join(workdir, "ledger.sqlite3")
    key = seed_ledger(db)

    proc: Any = None
    server: LocalCyclesServer | None = None
    if args.in_process:
        server = LocalCyclesServer(db).start()
        url = server.base_url
    else:
        proc, url = spawn_server_process(db)

    journal = os.path.join(workdir, "journal")
    client = make_client(url, key, journal)
    # The floor: same transport as runcycles (httpx.Client, keep-alive pool, same headers).
    floor_http = httpx.Client(
        base_url=url, headers={"X-Cycles-API-Key": key}, timeout=httpx.Timeout(5.0)
    )
    server_pid = None if proc is None else proc.pid

    def empty_round_trip() -> None:
        if floor_http.get("/healthz").status_code != 200:
            raise RuntimeError("healthz failed")

    def lifecycle() -> None:
        lifecycle_with(client)

    for _ in range(200):  # warm up connections, caches, the SQLite page cache
        empty_round_trip()
        lifecycle()

    mode = "in-process thread" if args.in_process else "separate process"
    print(
        f"localcycles benchmark ({os.path.dirname(os.path.dirname(localcycles.__file__))}): "
        f"server in a {mode}, {os.cpu_count()} CPUs, "
        f"{args.seconds:.0f} s per phase, SQLite WAL synchronous=NORMAL"
    )
    # (label, latencies ms, ops/s, client CPU ms/op, server CPU ms/op)
    rows: list[tuple[str, list[float], float, float, float]] = []

    def measured(label: str, threads: int, op: Callable[[], None]) -> float:
        cpu0, srv0 = time.process_time(), process_cpu_s(server_pid)
        latencies, rate = run(threads, args.seconds, op)
        ops = max(1, len(latencies))
        client_ms = (time.process_time() - cpu0) * 1000 / ops
        server_ms = (process_cpu_s(server_pid) - srv0) * 1000 / ops
        rows.append((label, latencies, rate, client_ms, server_ms))
        return rate

    measured("1 thr: empty round trip", 1, empty_round_trip)
    measured("1 thr: reserve+commit", 1, lifecycle)
    measured("16 thr/1 proc: empty trip", 16, empty_round_trip)
    one_proc = measured("16 thr/1 proc: lifecycle", 16, lifecycle)
    spread: dict[int, float] = {}
    for processes in (2, 4):
        srv0 = process_cpu_s(server_pid)
        latencies, rate, client_cpu = run_spread(url, key, journal, processes, 16, args.seconds)
        ops = max(1, len(latencies))
        srv_ms = (process_cpu_s(server_pid) - srv0) * 1000 / ops
        label = f"16 thr/{processes} procs: lifecycle"
        rows.append((label, latencies, rate, client_cpu * 1000 / ops, srv_ms))
        spread[processes] = rate

    cpu_note = "" if server_pid is not None else " (server CPU is in the client process)"
    print(
        f"{'what':<28} {'p50 ms':>8} {'p99 ms':>8} {'per s':>7} "
        f"{'client cpu ms':>14} {'server cpu ms':>14}{cpu_note}"
    )
    for label, latencies, rate, client_ms, server_ms in rows:
        print(
            f"{label:<28} {percentile(latencies, 0.5):>8.3f} {percentile(latencies, 0.99):>8.3f} "
            f"{rate:>7.0f} {client_ms:>14.3f} {server_ms:>14.3f}"
        )
    floor1, life1 = rows[0][1], rows[1][1]
    ratio = percentile(life1, 0.5) / (2 * percentile(floor1, 0.5))
    print(f"ratio 1-thread lifecycle p50 / (2 x floor p50): {ratio:.2f} (target <= 3.0)")
    print(
        f"lifecycles/s with 16 runcycles threads: 1 process {one_proc:.0f}, "
        f"2 processes {spread[2]:.0f}, 4 processes {spread[4]:.0f} (target >= 500); "
        f"16-thread empty round trips in 1 process {rows[2][2]:.0f}/s; "
        f"mean single-thread lifecycle {statistics.fmean(life1):.3f} ms"
    )
    # Client and server share this machine's CPUs: no schedule beats total CPU / CPU per op.
    cpus = os.cpu_count() or 1
    for label, _, rate, client_ms, server_ms in rows[3:6]:
        if server_pid is not None and client_ms + server_ms > 0:
            ceiling = 1000 * cpus / (client_ms + server_ms)
            print(
                f"{label}: CPU ceiling {ceiling:.0f}/s on {cpus} CPUs "
                f"(client {client_ms:.2f} + server {server_ms:.2f} ms per lifecycle); "
                f"measured {rate:.0f}/s"
            )
    client_ceiling = 1000 / rows[1][3] if rows[1][3] else float("inf")
    print(
        f"one client process can drive at most ~{client_ceiling:.0f} lifecycles/s "
        f"(1000 / its CPU ms per lifecycle at 1 thread; the GIL holds it to one core)"
    )

    # Server capacity without httpx's client-side cost: 16 threads, one stdlib keep-alive
    # connection each. On a 2-core box the runcycles/httpx client, not the server, is the
    # limit of the figures above (compare the 16-thread floor).
    _, raw_floor_rate = run(16, args.seconds / 2, LeanClient(url, key).floor)
    srv0 = process_cpu_s(server_pid)
    raw_lat, raw_rate = run(16, args.seconds / 2, LeanClient(url, key).lifecycle)
    raw_srv_ms = (process_cpu_s(server_pid) - srv0) * 1000 / max(1, len(raw_lat))
    print(
        f"server capacity (16 threads, http.client): empty round trips {raw_floor_rate:.0f}/s, "
        f"lifecycles {raw_rate:.0f}/s (p50 {percentile(raw_lat, 0.5):.2f} ms, "
        f"p99 {percentile(raw_lat, 0.99):.2f} ms, server cpu {raw_srv_ms:.3f} ms/lifecycle)"
    )

    client.close()
    floor_http.close()
    if server is not None:
        server.stop()
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)
    side_by_side(workdir, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
