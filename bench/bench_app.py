"""Benchmark the generated app under gunicorn: what budget-guarding costs per request.

Bakes the default project into a temporary directory and serves it with gunicorn (2 gthread
workers x 8 threads, APP_ENV=development, the embedded Cycles ledger of each worker on one
SQLite file, the fake LLM provider, a large budget via CYCLES_LOCAL_BUDGET_USD). Then, in
one run:

1. latency (1 client, keep-alive) and throughput (8 client threads) of ``POST /chat`` with
   budgeting on, side by side with the same work with budgeting off;
2. Cycles operations per guarded request, counted at the ledger;
3. a tenant out of budget hammered by 8 client threads: 402s/s and Cycles calls/s (the deny
   cache should hold it to about one ``decide`` per second per worker);
4. RSS (VmRSS) of each worker before and after 10,000 more requests;
5. after gunicorn has stopped, where the guard's time goes, in this process with the same
   app on the same ledger (no HTTP in front of Flask): the preflight ``decide`` alone,
   runcycles' ``stream_reservation`` (reserve + commit, no model call) alone, the same
   reserve + commit as two bare client calls, and an empty HTTP round trip to the ledger.

Budgeting off, without a production kill switch: gunicorn serves a bench-only WSGI module
written into the temp dir. It builds the app with ``create_app()`` and adds one route,
``POST /bench/chat-unguarded``: the caller authenticated as for ``/chat``, the body parsed
and validated by the same ``api.parse_chat``, the same provider called, the same JSON
answer, but no ``decide``, no reservation, no commit. The difference between the two routes
is what the Cycles guard costs.

Cycles calls are counted at the server: every decide, reserve and commit the ledger executes
leaves one idempotency record (one per distinct idempotency key and endpoint), read from the
SQLite file before and after each phase (decide and reserve: one idempotency record each;
commit and release: the reservation's final status). A client retry replaying the same key
would not be counted again; none happen here (every answer is checked for its status).

    /work/venv/bin/python bench/bench_app.py [--seconds 4] [--memory-requests 10000]

Bounded: about 1-2 minutes on 2 CPUs; the gunicorn process group is killed in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")
WORKERS = 2
THREADS = 8
CLIENT_THREADS = 8
GUARDED = "/chat"
UNGUARDED = "/bench/chat-unguarded"
BODY = json.dumps({"prompt": "Say something about budgets.", "max_tokens": 64}).encode()
RICH = "acme"  # a big budget
BROKE = "globex"  # set to zero after start-up
DENY_CACHE_MS = 1000  # the default

WSGI_MODULE = '''\
"""Bench only: the app, plus an unguarded twin of POST /chat (see bench/bench_app.py)."""

from flask import Blueprint, Response, current_app

from {pkg} import api, create_app, pricing, tenancy
from {pkg}.guard import GuardedCompletion, get_provider

app = create_app()
twin = Blueprint("bench", __name__, url_prefix="/bench")
twin.before_request(tenancy.authenticate)


@twin.post("/chat-unguarded")
def chat_unguarded() -> Response:
    call = api.parse_chat(api.json_body(), current_app.extensions["settings"])
    completion = get_provider().complete(
        prompt=call.prompt, max_tokens=call.max_tokens, system=call.system
    )
    cost = pricing.cost(completion.input_tokens, completion.output_tokens)
    result = GuardedCompletion(completion, call.max_tokens, cost, guarded=False)
    return api.completion_response("text", result)


app.register_blueprint(twin)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Client:
    """One keep-alive HTTP/1.1 connection (reconnects if the server closes it)."""

    def __init__(self, port: int, tenant: str) -> None:
        self.port = port
        self.headers = {
            "Authorization": f"Bearer dev-key-{tenant}",
            "Content-Type": "application/json",
        }
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str) -> int:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, BODY, self.headers)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def load(
    port: int,
    tenant: str,
    path: str,
    expect: int,
    *,
    threads: int,
    seconds: float | None = None,
    requests: int | None = None,
) -> tuple[int, float, list[float]]:
    """Send requests from ``threads`` keep-alive clients for ``seconds`` or ``requests``.

    Returns (requests done, elapsed seconds, latencies in ms). Any other status than
    ``expect`` fails the benchmark.
    """
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    left = [requests if requests is not None else math.inf]
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else math.inf

    def run(index: int) -> None:
        client = Client(port, tenant)
        mine = latencies[index]
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                status = client.post(path)
                mine.append((time.perf_counter() - t0) * 1000)
                if status != expect:
                    errors.append(f"{path} as {tenant}: HTTP {status}, expected {expect}")
                    return
        except Exception as exc:  # reported below
            errors.append(f"{path} as {tenant}: {exc!r}")
        finally:
            client.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(errors[0])
    merged = [x for chunk in latencies for x in chunk]
    return len(merged), elapsed, merged


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cycles_ops(db: Path) -> dict[str, int]:
    """Operations the ledger executed so far, per endpoint (decide, reserve, commit...)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT endpoint, COUNT(*) FROM idempotency GROUP BY endpoint")
        ops = {str(endpoint): int(count) for endpoint, count in rows}
        # A commit or release is recorded on its reservation, not in the idempotency table.
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM reservations "
            "WHERE status IN ('COMMITTED', 'RELEASED') GROUP BY status"
        )
        finals = {"COMMITTED": "commit", "RELEASED": "release"}
        ops.update({finals[str(status)]: int(count) for status, count in rows})
        return ops
    finally:
        conn.close()


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after[k] != before.get(k)}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def bake(workdir: Path) -> tuple[Path, str]:
    subprocess.run(
        [str(COOKIECUTTER), "--no-input", "-o", str(workdir / "bake"), str(TEMPLATE)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (project,) = (workdir / "bake").iterdir()
    (package,) = (p.name for p in (project / "src").iterdir() if (p / "__init__.py").exists())
    return project, package


def wait_until_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz in time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn's whole process group: quick shutdown, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput phase")
    parser.add_argument("--latency-requests", type=int, default=600, help="per route")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-app-"))
    proc: subprocess.Popen[bytes] | None = None
    log_file = None
    try:
        project, package = bake(workdir)
        (workdir / "bench_wsgi.py").write_text(WSGI_MODULE.format(pkg=package))
        db = workdir / "ledger.sqlite3"
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(project / "src"), str(workdir)]),
            "APP_ENV": "development",
            "CYCLES_BASE_URL": "local",
            "CYCLES_LOCAL_DB": str(db),
            "CYCLES_JOURNAL_DIR": str(workdir / "journal"),
            "CYCLES_LOCAL_BUDGET_USD": "1000000",
            "CYCLES_DENY_CACHE_MS": str(DENY_CACHE_MS),
            "LLM_PROVIDER": "fake",
            "WEB_CONCURRENCY": str(WORKERS),
            "GUNICORN_THREADS": str(THREADS),
        }
        log_file = (workdir / "gunicorn.log").open("wb")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "-c", str(project / "gunicorn.conf.py")),
                *("--bind", f"127.0.0.1:{port}", "bench_wsgi:app"),
            ],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one in `finally`
        )
        wait_until_up(port, proc)
        pids = worker_pids(proc.pid)
        boot_rss = {pid: rss_kb(pid) for pid in pids}

        # Both workers have seeded the ledger; now empty BROKE's budget (the embedded
        # ledger takes writes from any process on the same file).
        sys.path.insert(0, str(project / "src"))
        from importlib import import_module

        localcycles = import_module(f"{package}.localcycles")
        ledger = localcycles.LocalLedger(str(db))
        broke_scope = _scope_of(ledger, BROKE)
        ledger.set_budget(broke_scope, "USD_MICROCENTS", allocated=0)
        ledger.close()

        # Warm-up: every thread of every worker has made its Cycles clients and connections.
        for path in (GUARDED, UNGUARDED):
            load(port, RICH, path, 200, threads=CLIENT_THREADS, requests=400)
        warm_rss = {pid: rss_kb(pid) for pid in pids}

        # 1. latency, one client: the two routes interleaved in blocks of 50.
        lat: dict[str, list[float]] = {GUARDED: [], UNGUARDED: []}
        for _ in range(max(1, args.latency_requests // 50)):
            for path in (GUARDED, UNGUARDED):
                lat[path] += load(port, RICH, path, 200, threads=1, requests=50)[2]

        # 2. throughput, 8 client threads, with the Cycles operations counted at the ledger.
        tput: dict[str, tuple[int, float, list[float]]] = {}
        ops: dict[str, dict[str, int]] = {}
        for path in (GUARDED, UNGUARDED):
            before = cycles_ops(db)
            tput[path] = load(port, RICH, path, 200, threads=CLIENT_THREADS, seconds=args.seconds)
            ops[path] = delta(before, cycles_ops(db))

        # 3. the broke tenant, hammered; first 1 s unmeasured, so each worker has its denial
        # cached (the very first requests of a burst all ask Cycles: counted separately).
        before = cycles_ops(db)
        load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, seconds=1.0)
        cold_ops = delta(before, cycles_ops(db))
        before = cycles_ops(db)
        denied = load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, seconds=args.seconds)
        deny_ops = delta(before, cycles_ops(db))

        # 4. memory: N more requests, 3 guarded 200s to 1 cached 402.
        start_rss = {pid: rss_kb(pid) for pid in pids}
        mem_start = time.perf_counter()
        before = cycles_ops(db)
        served = 0
        trail: list[tuple[int, dict[int, int]]] = []
        for _ in range(args.memory_requests // 2000):
            served += load(port, RICH, GUARDED, 200, threads=CLIENT_THREADS, requests=1500)[0]
            served += load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, requests=500)[0]
            trail.append((served, {pid: rss_kb(pid) for pid in pids}))
        mem_s = time.perf_counter() - mem_start
        mem_ops = delta(before, cycles_ops(db))
        end_rss = {pid: rss_kb(pid) for pid in pids}
        assert worker_pids(proc.pid) == pids, "a worker was restarted during the run"

        report(
            args,
            lat,
            tput,
            ops,
            denied,
            deny_ops,
            [boot_rss, warm_rss, start_rss, end_rss],
            served,
            mem_s,
        )
        print(
            "   RSS MB after each batch: "
            + "; ".join(
                f"{n}: " + "/".join(f"{kb / 1024:.1f}" for _, kb in sorted(rss.items()))
                for n, rss in trail
            )
        )
        print(f"   (first 1 s of the deny burst, unmeasured: Cycles {fmt_ops(cold_ops)})")
        print(f"  (Cycles operations during the memory phase: {fmt_ops(mem_ops)})")
        stop(proc)
        proc = None
        guard_breakdown(package, env, args.latency_requests)
        return 0
    finally:
        if proc is not None:
            stop(proc)
        if log_file is not None:
            log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


def guard_breakdown(package: str, env: dict[str, str], n: int) -> None:
    """Phase 5: time the guard's parts one by one (single thread, p50 of ``n`` each)."""
    import uuid
    from importlib import import_module

    import httpx

    pkg = import_module(package)
    budget_mod = import_module(f"{package}.budget")
    runcycles = import_module("runcycles")
    app = pkg.create_app(
        {k: v for k, v in env.items() if k.startswith(("APP_", "CYCLES_", "LLM_"))}
    )
    client = app.test_client()
    auth = {"Authorization": f"Bearer dev-key-{RICH}"}
    body = json.loads(BODY)
    with app.app_context():
        budgets = budget_mod.get_budgets(app)
        cycles = budgets.client_for(RICH)
        subject, action = budgets.subject_for(RICH), budgets.action()
        estimate = runcycles.Amount(unit=runcycles.Unit.USD_MICROCENTS, amount=10_000)
        ledger_url = app.extensions[budget_mod.LOCAL_SERVER_EXTENSION].base_url
        floor = httpx.Client(base_url=ledger_url)

        def stream() -> None:
            with cycles.stream_reservation(
                subject=subject, action=action, estimate=estimate, ttl_ms=60_000
            ) as held:
                held.usage.set_actual_cost(7_000)

        def bare() -> None:
            wire = {"unit": "USD_MICROCENTS"}
            made = cycles.create_reservation(
                {
                    "idempotency_key": uuid.uuid4().hex,
                    "subject": subject.model_dump(exclude_none=True),
                    "action": action.model_dump(exclude_none=True),
                    "estimate": {**wire, "amount": 10_000},
                    "ttl_ms": 60_000,
                }
            )
            done = cycles.commit_reservation(
                made.body["reservation_id"],
                {"idempotency_key": uuid.uuid4().hex, "actual": {**wire, "amount": 7_000}},
            )
            assert done.status == 200, done.body

        parts: list[tuple[str, Callable[[], object]]] = [
            ("Flask GET /healthz (test client)", lambda: client.get("/healthz")),
            (
                "POST /chat guarded (test client)",
                lambda: client.post("/chat", json=body, headers=auth),
            ),
            ("preflight decide", lambda: budgets.preflight(RICH, 10_000)),
            ("stream_reservation reserve+commit", stream),
            ("bare reserve + commit (2 calls)", bare),
            ("empty HTTP round trip to ledger", lambda: floor.get("/healthz")),
        ]
        print("\n5. where the guard's time goes: one thread, in-process app + its embedded ledger")
        results: dict[str, float] = {}
        for label, call in parts:
            for _ in range(30):
                call()
            took = []
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                took.append((time.perf_counter() - t0) * 1000)
            results[label] = pct(took, 0.5)
            print(f"   {label:<36} p50 {results[label]:7.2f} ms")
        parts_sum = results["preflight decide"] + results["stream_reservation reserve+commit"]
        print(
            f"   decide + stream_reservation = {parts_sum:.2f} ms of Cycles calls per guarded "
            f"request (3 HTTP calls; floor of 3 empty round trips "
            f"{3 * results['empty HTTP round trip to ledger']:.2f} ms)"
        )
        floor.close()
    budget_mod.close(app)


def _scope_of(ledger: object, tenant: str) -> str:
    """The budget scope of app tenant ``tenant`` in the default bake (either isolation)."""
    budget: Callable[[str, str], object] = ledger.budget  # type: ignore[attr-defined]
    for scope in (f"tenant:operator/workspace:{tenant}", f"tenant:{tenant}"):
        if budget(scope, "USD_MICROCENTS") is not None:
            return scope
    raise RuntimeError(f"no budget for {tenant}")


def fmt_ops(ops: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(ops.items())) or "none"


def report(
    args: argparse.Namespace,
    lat: dict[str, list[float]],
    tput: dict[str, tuple[int, float, list[float]]],
    ops: dict[str, dict[str, int]],
    denied: tuple[int, float, list[float]],
    deny_ops: dict[str, int],
    rss: list[dict[int, int]],
    served: int,
    mem_s: float,
) -> None:
    cpus = os.cpu_count()
    print(f"gunicorn gthread {WORKERS} workers x {THREADS} threads, embedded ledger, fake LLM;")
    print(f"load client: http.client keep-alive threads in one process; {cpus} CPUs shared\n")

    print("1. POST /chat latency, 1 client, sequential (ms)")
    print(f"   {'route':<28}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}")
    for path, name in ((GUARDED, "guarded  /chat"), (UNGUARDED, "unguarded twin")):
        v = lat[path]
        print(f"   {name:<28}{len(v):>6}{pct(v, 0.5):>9.2f}{pct(v, 0.9):>9.2f}{pct(v, 0.99):>9.2f}")
    g50, u50 = pct(lat[GUARDED], 0.5), pct(lat[UNGUARDED], 0.5)
    g99, u99 = pct(lat[GUARDED], 0.99), pct(lat[UNGUARDED], 0.99)
    verdict = "OK" if g50 - u50 <= 3 else "OVER"
    print(
        f"   guard overhead: p50 +{g50 - u50:.2f} ms (target <= 3 ms: {verdict}), "
        f"p99 +{g99 - u99:.2f} ms; p50 ratio {g50 / u50:.2f}x\n"
    )

    print(f"2. POST /chat throughput, {CLIENT_THREADS} client threads, {args.seconds:g} s each")
    print(f"   {'route':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}   Cycles ops per request")
    for path, name in ((GUARDED, "guarded  /chat"), (UNGUARDED, "unguarded twin")):
        n, secs, v = tput[path]
        per = {k: c / n for k, c in ops[path].items()}
        total = sum(ops[path].values()) / n
        detail = ", ".join(f"{k} {c:.2f}" for k, c in sorted(per.items()))
        print(
            f"   {name:<28}{n / secs:>9.0f}{pct(v, 0.5):>9.2f}{pct(v, 0.99):>9.2f}"
            f"   {total:.2f}" + (f" ({detail})" if detail else "")
        )
    g_rps = tput[GUARDED][0] / tput[GUARDED][1]
    u_rps = tput[UNGUARDED][0] / tput[UNGUARDED][1]
    print(f"   guarded/unguarded throughput: {g_rps / u_rps:.2f}x\n")

    n, secs, v = denied
    calls = sum(deny_ops.values())
    print(
        f"3. tenant out of budget, {CLIENT_THREADS} client threads, {secs:.1f} s "
        f"(CYCLES_DENY_CACHE_MS={DENY_CACHE_MS})"
    )
    print(f"   402 answers/s {n / secs:.0f}   p50 {pct(v, 0.5):.2f} ms   p99 {pct(v, 0.99):.2f} ms")
    print(
        f"   Cycles calls {calls} ({fmt_ops(deny_ops)}): {calls / secs:.2f}/s, "
        f"{calls / secs / WORKERS:.2f}/s per worker (expect <= ~1); "
        f"{calls / n:.5f} per 402\n"
    )

    print(
        f"4. worker RSS (VmRSS), {served} requests over {mem_s:.1f} s "
        f"(both workers; 3 guarded 200s : 1 cached 402)"
    )
    print(f"   {'pid':>8}{'boot':>8}{'warm':>8}{'before':>8}{'after':>8}{'growth':>9}   (MB)")
    before, after = rss[2], rss[3]
    for pid in sorted(after):
        growth = (after[pid] - before[pid]) / before[pid] * 100
        verdict = "OK" if growth <= 10 else "OVER"
        cells = "".join(f"{r[pid] / 1024:>8.1f}" for r in rss)
        print(f"   {pid:>8}{cells}{growth:>8.1f}%  (target <= 10%: {verdict})")
    print("   boot: after start-up; warm: after 800 requests; before/after: the phase above")


if __name__ == "__main__":
    sys.exit(main())
