"""Benchmark the generated app under gunicorn: what the budget guard costs per request.

Bakes the default project into a temporary directory and serves it with gunicorn (2 gthread
workers x 8 threads, APP_ENV=development, the embedded Cycles ledger of each worker on one
SQLite file, the fake LLM provider, a large budget via CYCLES_LOCAL_BUDGET_USD). Then, side
by side in one run (ratios matter more than absolute figures: the machine is shared):

1. Cycles requests per guarded request, counted at the embedded server by method and path:
   served JSON and streamed ``POST /chat`` (expect 2.00: reserve, commit), a denial Cycles
   answers (expect at most 1), a denial the deny cache answers (expect 0);
2. latency, one keep-alive client, of ``POST /chat`` guarded and of its unguarded twin
   (p50/p90/p99; the guard's p50 overhead should be at most 5 ms);
3. streaming (``"stream": true``), one client: time to the first server-sent event and to
   ``event: done``, guarded and unguarded twin;
4. throughput with 8 client threads, JSON and streamed, guarded/unguarded (target >= 0.2x);
5. a tenant out of budget hammered by 8 client threads: 402s/s and Cycles calls/s (the deny
   cache should hold it to about one reservation attempt per second per worker);
6. RSS (VmRSS) of each worker before and after 10,000 more requests (JSON, streamed, 402);
7. after gunicorn has stopped, where the guard's time goes, in this process with the same
   app on the same ledger (no HTTP in front of Flask): the guard's own reserve + commit
   (``reservations.reserve``/``settle``), the same two calls as bare client calls,
   runcycles' ``stream_reservation`` for reference, the helper thread that bounds each
   provider call, and an empty HTTP round trip to the ledger.

The unguarded twins, without a production kill switch: gunicorn serves a bench-only WSGI
module written into the temp dir. It builds the app with ``create_app()`` and adds
``POST /bench/chat-unguarded``: the caller authenticated as for ``/chat``, the body parsed
and validated by the same ``api.parse_chat``, the same provider called (``complete``, or
``stream`` framed by the same ``sse`` module, ending with the same ``done`` summary), the
same JSON answer, but no reservation, no commit, no heartbeat. The difference between the
two routes is what the Cycles guard costs.

Cycles requests are counted at the server: the same bench module wraps the embedded
server's request dispatcher (``localcycles.routes.Api.dispatch``) so that each request the
server answers appends one line ``METHOD /path`` (reservation ids replaced by ``{id}``) to
a file shared by both workers (one O_APPEND write each). Client retries and background
settlements are therefore counted too.

    .venv/bin/python bench/bench_app.py [--seconds 4] [--memory-requests 10000]
        [--localcycles-rev HEAD]

``--localcycles-rev REV`` replaces the bake's embedded server (``src/localcycles``) with the
one committed at REV of this repository, for when the working tree's is mid-change.
Bounded: about 2-3 minutes on 2 CPUs; the gunicorn process group is killed in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")
WORKERS = 2
THREADS = 8
CLIENT_THREADS = 8
GUARDED = "/chat"
UNGUARDED = "/bench/chat-unguarded"
PROMPT = "Say something about budgets."
RICH = "acme"  # a big budget
BROKE = "globex"  # set to zero after start-up
DENY_CACHE_MS = 1000  # the default
LATENCY_TARGET_MS = 5.0
THROUGHPUT_TARGET = 0.2


def chat_body(max_tokens: int = 64, *, stream: bool = False) -> bytes:
    body: dict[str, object] = {"prompt": PROMPT, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


JSON_BODY = chat_body()
STREAM_BODY = chat_body(stream=True)

# Written to the temp dir and served by gunicorn as ``bench_wsgi:create_bench_app()``.
# ``PKG`` is replaced by the bake's package name (str.replace: the braces stay literal).
WSGI_MODULE = '''\
"""Bench only: the app, unguarded twins of POST /chat, and a count of Cycles requests.

See bench/bench_app.py in the template repository.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from localcycles import routes as cycles_routes

from PKG import api, create_app, pricing, sse, tenancy
from PKG.bodies import json_body
from PKG.guard import GuardedCompletion, LlmCall
from PKG.llm import LLMProvider, StreamProgress

_RESERVATION_ID = re.compile(r"^/v1/reservations/[^/]+")


def count_cycles_requests(log_path: str) -> None:
    """Every request the embedded server answers appends ``METHOD /path`` to log_path."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    dispatch = cycles_routes.Api.dispatch

    def counting_dispatch(self: Any, req: Any) -> Any:
        path = _RESERVATION_ID.sub("/v1/reservations/{id}", req.path)
        os.write(fd, f"{req.method} {path}\\n".encode())
        return dispatch(self, req)

    cycles_routes.Api.dispatch = counting_dispatch


def create_bench_app(overrides: Mapping[str, str] | None = None) -> Flask:
    log_path = os.environ.get("BENCH_CYCLES_LOG")
    if log_path:
        count_cycles_requests(log_path)
    app = create_app(overrides)
    twin = Blueprint("bench", __name__, url_prefix="/bench")
    twin.before_request(tenancy.authenticate)
    twin.post("/chat-unguarded")(chat_unguarded)
    app.register_blueprint(twin)
    return app


def chat_unguarded() -> Response:
    """POST /chat without Cycles: same auth, parsing, provider and answer."""
    call = api.parse_chat(json_body(), current_app.extensions["settings"])
    provider: LLMProvider = current_app.extensions["llm"]
    if call.stream:
        return sse.response(stream_unguarded(provider, call))
    completion = provider.complete(
        prompt=call.prompt, max_tokens=call.max_tokens, system=call.system
    )
    cost = pricing.cost(completion.input_tokens, completion.output_tokens)
    result = GuardedCompletion(completion, call.max_tokens, cost, guarded=False)
    return api.completion_response("text", result)


def stream_unguarded(provider: LLMProvider, call: LlmCall) -> Iterator[bytes]:
    progress = StreamProgress()
    deltas = provider.stream(
        prompt=call.prompt, max_tokens=call.max_tokens, system=call.system, progress=progress
    )
    for delta in deltas:
        yield sse.event("delta", {"text": delta})
    usage = {"input_tokens": progress.input_tokens or 0, "output_tokens": progress.output_tokens or 0}
    summary = {
        "model": progress.model or provider.model,
        "max_tokens": call.max_tokens,
        "usage": usage,
        "cost_usd_microcents": pricing.cost(usage["input_tokens"], usage["output_tokens"]),
    }
    yield sse.event("done", summary)
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

    def _send(self, path: str, body: bytes) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body, self.headers)
                return self.conn.getresponse()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: bytes) -> tuple[int, float | None]:
        """A JSON request: (status, None)."""
        response = self._send(path, body)
        response.read()
        return response.status, None

    def post_stream(self, path: str, body: bytes) -> tuple[int, float | None]:
        """A streamed request read to its end: (status, seconds to the first event).

        A 200 must end with ``event: done``; anything else is reported as status 0.
        """
        t0 = time.perf_counter()
        response = self._send(path, body)
        if response.status != 200:
            response.read()
            return response.status, None
        first: float | None = None
        last_event = b""
        while line := response.readline():
            if line.startswith(b"event:"):
                if first is None:
                    first = time.perf_counter() - t0
                last_event = line.strip()
        return (200 if last_event == b"event: done" else 0), first

    def close(self) -> None:
        self.conn.close()


@dataclass
class Run:
    """What one load phase measured."""

    count: int
    seconds: float
    latencies_ms: list[float]
    first_event_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def load(
    port: int,
    tenant: str,
    path: str,
    expect: int,
    *,
    threads: int,
    seconds: float | None = None,
    requests: int | None = None,
    stream: bool = False,
    bodies: list[bytes] | None = None,
) -> Run:
    """Send requests from ``threads`` keep-alive clients for ``seconds`` or ``requests``.

    ``bodies`` (one client only) are sent in order instead of the standard body. Any other
    status than ``expect`` fails the benchmark.
    """
    if bodies is not None:
        assert threads == 1
        requests = len(bodies)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    firsts: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    left = [requests if requests is not None else math.inf]
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else math.inf

    def run(index: int) -> None:
        client = Client(port, tenant)
        send = client.post_stream if stream else client.post
        body = STREAM_BODY if stream else JSON_BODY
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                if bodies is not None:
                    body = bodies[len(latencies[index])]
                t0 = time.perf_counter()
                status, first = send(path, body)
                latencies[index].append((time.perf_counter() - t0) * 1000)
                if first is not None:
                    firsts[index].append(first * 1000)
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
    return Run(len(merged), elapsed, merged, [x for chunk in firsts for x in chunk])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CyclesRequestLog:
    """Reads the lines the workers' embedded servers append: one per Cycles request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> Counter[str]:
        """The Cycles requests answered since the last take, by ``METHOD /path``."""
        if not self.path.exists():
            return Counter()
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line is written whole, but be safe
        self.offset += len(complete)
        return Counter(complete.decode().splitlines())


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def bake(workdir: Path, localcycles_rev: str | None) -> tuple[Path, str]:
    subprocess.run(
        [str(COOKIECUTTER), "--no-input", "-o", str(workdir / "bake"), str(TEMPLATE)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (project,) = (workdir / "bake").iterdir()
    (package,) = (
        p.name
        for p in (project / "src").iterdir()
        if (p / "__init__.py").exists() and p.name != "localcycles"
    )
    if localcycles_rev is not None:
        replace_localcycles(project / "src" / "localcycles", localcycles_rev)
    return project, package


def replace_localcycles(target: Path, rev: str) -> None:
    """Put the embedded server committed at ``rev`` (either of its two homes) at ``target``."""
    slug = "{{cookiecutter.project_slug}}/src"
    for home in (f"{slug}/localcycles", f"{slug}/{{{{cookiecutter.package_name}}}}/localcycles"):
        archive = subprocess.run(
            ["git", "-C", str(TEMPLATE), "archive", rev, home], capture_output=True, check=False
        )
        if archive.returncode == 0:
            break
    else:
        raise RuntimeError(f"no localcycles package at {rev}")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                name = member.name[len(home) + 1 :]
                source = tar.extractfile(member)
                assert source is not None
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(source.read())


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


@dataclass
class Figures:
    """Everything the gunicorn phases measured, for the report."""

    ops: dict[str, tuple[int, Counter[str]]] = field(default_factory=dict)  # label: (n, ops)
    latency: dict[str, list[float]] = field(default_factory=dict)
    first_event: dict[str, list[float]] = field(default_factory=dict)
    stream_total: dict[str, list[float]] = field(default_factory=dict)
    throughput: dict[str, Run] = field(default_factory=dict)
    denied: Run | None = None
    deny_ops: Counter[str] = field(default_factory=Counter)
    cold_deny_ops: Counter[str] = field(default_factory=Counter)
    rss: list[dict[int, int]] = field(default_factory=list)
    rss_trail: list[tuple[int, dict[int, int]]] = field(default_factory=list)
    memory_requests: int = 0
    memory_seconds: float = 0.0
    memory_ops: Counter[str] = field(default_factory=Counter)

    def count_ops(self, label: str, n: int, ops: Counter[str]) -> None:
        seen, total = self.ops.get(label, (0, Counter()))
        self.ops[label] = (seen + n, total + ops)


def measure(port: int, log: CyclesRequestLog, args: argparse.Namespace, pids: list[int]) -> Figures:
    fig = Figures()
    fig.rss.append({pid: rss_kb(pid) for pid in pids})

    # Warm-up: every thread of every worker has made its Cycles clients and connections.
    for path in (GUARDED, UNGUARDED):
        load(port, RICH, path, 200, threads=CLIENT_THREADS, requests=400)
        load(port, RICH, path, 200, threads=CLIENT_THREADS, requests=100, stream=True)
    log.take()
    fig.rss.append({pid: rss_kb(pid) for pid in pids})

    # Latency, one client: the routes interleaved in blocks of 50, each block's Cycles
    # requests counted.
    routes = (("guarded", GUARDED), ("unguarded", UNGUARDED))
    for _ in range(max(1, args.latency_requests // 50)):
        for name, path in routes:
            run = load(port, RICH, path, 200, threads=1, requests=50)
            fig.latency.setdefault(name, []).extend(run.latencies_ms)
            fig.count_ops(f"{name} JSON", run.count, log.take())
            run = load(port, RICH, path, 200, threads=1, requests=50, stream=True)
            fig.first_event.setdefault(name, []).extend(run.first_event_ms)
            fig.stream_total.setdefault(name, []).extend(run.latencies_ms)
            fig.count_ops(f"{name} stream", run.count, log.take())

    # Throughput, 8 client threads.
    for kind, stream in (("JSON", False), ("stream", True)):
        for name, path in routes:
            run = load(
                port, RICH, path, 200, threads=CLIENT_THREADS, seconds=args.seconds, stream=stream
            )
            fig.throughput[f"{name} {kind}"] = run
            fig.count_ops(f"{name} {kind}", run.count, log.take())

    # Denials. Uncached: one client, each request asking less than the one before, so no
    # worker's deny cache can answer it (a cached denial covers only estimates >= its own).
    descending = [chat_body(max_tokens) for max_tokens in range(1000, 900, -1)]
    run = load(port, BROKE, GUARDED, 402, threads=1, bodies=descending)
    fig.count_ops("denied, uncached", run.count, log.take())
    # Cached: one client, the same body; the first request of each worker thread's
    # connection may still ask Cycles once (then the cache answers for 1 s).
    run = load(port, BROKE, GUARDED, 402, threads=1, requests=200)
    fig.count_ops("denied, cached (1 client)", run.count, log.take())
    # Hammered: the first 1 s unmeasured (every worker gets its denial cached), then measured.
    load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, seconds=1.0)
    fig.cold_deny_ops = log.take()
    fig.denied = load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, seconds=args.seconds)
    fig.deny_ops = log.take()
    fig.count_ops("denied, 8 threads", fig.denied.count, fig.deny_ops)

    # Memory: N more requests: 2 guarded JSON : 1 guarded stream : 1 cached 402.
    fig.rss.append({pid: rss_kb(pid) for pid in pids})
    started = time.perf_counter()
    for _ in range(max(1, args.memory_requests // 2000)):
        runs = (
            load(port, RICH, GUARDED, 200, threads=CLIENT_THREADS, requests=1000),
            load(port, RICH, GUARDED, 200, threads=CLIENT_THREADS, requests=500, stream=True),
            load(port, BROKE, GUARDED, 402, threads=CLIENT_THREADS, requests=500),
        )
        fig.memory_requests += sum(run.count for run in runs)
        fig.rss_trail.append((fig.memory_requests, {pid: rss_kb(pid) for pid in pids}))
    fig.memory_seconds = time.perf_counter() - started
    fig.memory_ops = log.take()
    fig.rss.append({pid: rss_kb(pid) for pid in pids})
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput phase")
    parser.add_argument("--latency-requests", type=int, default=600, help="per route and kind")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument(
        "--localcycles-rev",
        metavar="REV",
        help="use the embedded server committed at REV (e.g. HEAD) instead of the bake's",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-app-"))
    proc: subprocess.Popen[bytes] | None = None
    log_file = None
    try:
        project, package = bake(workdir, args.localcycles_rev)
        (workdir / "bench_wsgi.py").write_text(WSGI_MODULE.replace("PKG", package))
        db = workdir / "ledger.sqlite3"
        requests_log = workdir / "cycles-requests.log"
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
            "BENCH_CYCLES_LOG": str(requests_log),
        }
        log_file = (workdir / "gunicorn.log").open("wb")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "-c", str(project / "gunicorn.conf.py")),
                *("--bind", f"127.0.0.1:{port}", "bench_wsgi:create_bench_app()"),
            ],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one in `finally`
        )
        wait_until_up(port, proc)
        pids = worker_pids(proc.pid)

        # Both workers have seeded the ledger; now empty BROKE's budget (the embedded
        # ledger takes writes from any process on the same file).
        sys.path[:0] = [str(project / "src"), str(workdir)]
        from importlib import import_module

        localcycles = import_module("localcycles")
        ledger = localcycles.LocalLedger(str(db))
        ledger.set_budget(_scope_of(ledger, BROKE), "USD_MICROCENTS", allocated=0)
        ledger.close()

        figures = measure(port, CyclesRequestLog(requests_log), args, pids)
        assert worker_pids(proc.pid) == pids, "a worker was restarted during the run"
        report(args, figures)
        stop(proc)
        proc = None
        guard_breakdown(package, env, args.latency_requests)
        return 0
    except BaseException:
        if log_file is not None:
            log_file.flush()
            tail = (workdir / "gunicorn.log").read_text(errors="replace")[-3000:]
            print(f"--- gunicorn log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop(proc)
        if log_file is not None:
            log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


def guard_breakdown(package: str, env: dict[str, str], n: int) -> None:
    """Phase 7: time the guard's parts one by one (single thread, p50 of ``n`` each)."""
    import uuid
    from importlib import import_module

    import httpx

    budget_mod = import_module(f"{package}.budget")
    guard = import_module(f"{package}.guard")
    reservations = import_module(f"{package}.reservations")
    runcycles = import_module("runcycles")
    bench_wsgi = import_module("bench_wsgi")
    app = bench_wsgi.create_bench_app(
        {k: v for k, v in env.items() if k.startswith(("APP_", "CYCLES_", "LLM_"))}
    )
    client = app.test_client()
    auth = {"Authorization": f"Bearer dev-key-{RICH}"}
    body = json.loads(JSON_BODY)
    stream_body = json.loads(STREAM_BODY)
    provider = app.extensions["llm"]
    with app.app_context():
        budgets = budget_mod.get_budgets(app)
        cycles = budgets.client_for(RICH)
        subject, action = budgets.subject_for(RICH), runcycles.Action(kind="llm.completion", name="m")
        estimate = runcycles.Amount(unit=runcycles.Unit.USD_MICROCENTS, amount=10_000)
        ledger_url = app.extensions[budget_mod.LOCAL_SERVER_EXTENSION].base_url
        floor = httpx.Client(base_url=ledger_url)
        host, port = ledger_url.removeprefix("http://").split(":")
        raw = http.client.HTTPConnection(host, int(port))
        usage = reservations.Usage(10, 13, "m", 1)

        def guard_calls() -> None:
            hold = reservations.reserve(budgets, RICH, "chat", 10_000)
            settled = reservations.settle(budgets, hold, 7_000, usage)
            assert settled is not None and settled.outcome == "committed", settled

        def bare() -> None:
            wire = {"unit": "USD_MICROCENTS"}
            made = cycles.create_reservation(
                {
                    "idempotency_key": uuid.uuid4().hex,
                    "subject": budgets.subject_body(RICH),
                    "action": reservations.action_body(budgets),
                    "estimate": {**wire, "amount": 10_000},
                    "ttl_ms": 60_000,
                }
            )
            done = cycles.commit_reservation(
                made.body["reservation_id"],
                {"idempotency_key": uuid.uuid4().hex, "actual": {**wire, "amount": 7_000}},
            )
            assert done.status == 200, done.body

        def stream_reservation() -> None:
            with cycles.stream_reservation(
                subject=subject, action=action, estimate=estimate, ttl_ms=60_000
            ) as held:
                held.usage.set_actual_cost(7_000)

        def raw_round_trip() -> None:
            raw.request("GET", "/healthz")
            raw.getresponse().read()

        def complete() -> object:
            return provider.complete(prompt=PROMPT, max_tokens=64)

        parts: list[tuple[str, Callable[[], object]]] = [
            ("Flask GET /healthz", lambda: client.get("/healthz")),
            ("POST /chat guarded", lambda: client.post(GUARDED, json=body, headers=auth)),
            ("POST unguarded twin", lambda: client.post(UNGUARDED, json=body, headers=auth)),
            (
                "POST /chat stream guarded",
                lambda: client.post(GUARDED, json=stream_body, headers=auth).get_data(),
            ),
            (
                "POST stream unguarded twin",
                lambda: client.post(UNGUARDED, json=stream_body, headers=auth).get_data(),
            ),
            ("guard reserve + settle (2 calls)", guard_calls),
            ("bare create + commit (2 calls)", bare),
            ("runcycles stream_reservation", stream_reservation),
            ("provider.complete, direct", complete),
            ("provider.complete, _run_bounded", lambda: guard._run_bounded(complete, 30.0)),
            ("empty round trip, httpx", lambda: floor.get("/healthz")),
            ("empty round trip, http.client", raw_round_trip),
        ]
        print("\n7. where the guard's time goes: one thread, in-process app + its embedded ledger")
        print("   (Flask test client, no HTTP in front of Flask; p50 of", n, "each)")
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
        json_over = results["POST /chat guarded"] - results["POST unguarded twin"]
        stream_over = results["POST /chat stream guarded"] - results["POST stream unguarded twin"]
        calls = results["guard reserve + settle (2 calls)"]
        thread = results["provider.complete, _run_bounded"] - results["provider.complete, direct"]
        print(
            f"   in-process guard overhead: JSON +{json_over:.2f} ms, stream +{stream_over:.2f} ms;"
            f" of which the 2 Cycles calls {calls:.2f} ms (bare client "
            f"{results['bare create + commit (2 calls)']:.2f} ms, floor of 2 empty httpx "
            f"round trips {2 * results['empty round trip, httpx']:.2f} ms) and the helper thread "
            f"per provider call {thread:+.2f} ms"
        )
        floor.close()
        raw.close()
    budget_mod.close(app)


def _scope_of(ledger: object, tenant: str) -> str:
    """The budget scope of app tenant ``tenant`` in the default bake (either isolation)."""
    budget: Callable[[str, str], object] = ledger.budget  # type: ignore[attr-defined]
    for scope in (f"tenant:operator/workspace:{tenant}", f"tenant:{tenant}"):
        if budget(scope, "USD_MICROCENTS") is not None:
            return scope
    raise RuntimeError(f"no budget for {tenant}")


def fmt_ops(ops: Counter[str], per: int = 1) -> str:
    return ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(ops.items())) or "none"


def report(args: argparse.Namespace, fig: Figures) -> None:
    cpus = os.cpu_count()
    print(f"gunicorn gthread {WORKERS} workers x {THREADS} threads, embedded ledger, fake LLM;")
    print(f"load client: http.client keep-alive threads in one process; {cpus} CPUs shared\n")

    print("1. Cycles requests per request, counted at the embedded server (by method and path)")
    print(f"   {'phase':<28}{'requests':>9}{'Cycles':>8}{'per req':>9}   by path (per request)")
    for label, (n, ops) in fig.ops.items():
        total = sum(ops.values())
        print(f"   {label:<28}{n:>9}{total:>8}{total / n:>9.3f}   {fmt_ops(ops, n)}")
    print("   expect: served 2.00 (reserve, commit); unguarded 0; uncached denial <= 1;")
    print("   cached denial 0 (about one reserve per worker and deny-cache window)\n")

    print("2. POST /chat latency, 1 client, sequential (ms)")
    print(f"   {'route':<28}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name in ("guarded", "unguarded"):
        v = fig.latency[name]
        print(f"   {name:<28}{len(v):>6}{pct(v, 0.5):>9.2f}{pct(v, 0.9):>9.2f}{pct(v, 0.99):>9.2f}")
    g, u = fig.latency["guarded"], fig.latency["unguarded"]
    over50 = pct(g, 0.5) - pct(u, 0.5)
    verdict = "OK" if over50 <= LATENCY_TARGET_MS else "OVER"
    print(
        f"   guard overhead: p50 {over50:+.2f} ms (target <= {LATENCY_TARGET_MS:g} ms: "
        f"{verdict}), p90 {pct(g, 0.9) - pct(u, 0.9):+.2f} ms, "
        f"p99 {pct(g, 0.99) - pct(u, 0.99):+.2f} ms; p50 ratio {pct(g, 0.5) / pct(u, 0.5):.2f}x\n"
    )

    print('3. POST /chat "stream": true, 1 client, sequential (ms)')
    print(f"   {'route':<28}{'n':>6}{'1st p50':>9}{'1st p90':>9}{'done p50':>10}{'done p90':>10}")
    for name in ("guarded", "unguarded"):
        first, total = fig.first_event[name], fig.stream_total[name]
        print(
            f"   {name:<28}{len(first):>6}{pct(first, 0.5):>9.2f}{pct(first, 0.9):>9.2f}"
            f"{pct(total, 0.5):>10.2f}{pct(total, 0.9):>10.2f}"
        )
    gf, uf = fig.first_event["guarded"], fig.first_event["unguarded"]
    gt, ut = fig.stream_total["guarded"], fig.stream_total["unguarded"]
    print(
        f"   time to first event: p50 {pct(gf, 0.5) - pct(uf, 0.5):+.2f} ms, "
        f"p90 {pct(gf, 0.9) - pct(uf, 0.9):+.2f} ms over the twin "
        f"(ratio {pct(gf, 0.5) / pct(uf, 0.5):.2f}x); to done: p50 "
        f"{pct(gt, 0.5) - pct(ut, 0.5):+.2f} ms\n"
    )

    print(f"4. throughput, {CLIENT_THREADS} client threads, {args.seconds:g} s each")
    print(f"   {'route':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for label, run in fig.throughput.items():
        v = run.latencies_ms
        print(f"   {label:<28}{run.rate:>9.0f}{pct(v, 0.5):>9.2f}{pct(v, 0.99):>9.2f}")
    for kind in ("JSON", "stream"):
        ratio = fig.throughput[f"guarded {kind}"].rate / fig.throughput[f"unguarded {kind}"].rate
        verdict = "OK" if ratio >= THROUGHPUT_TARGET else "UNDER"
        print(
            f"   guarded/unguarded {kind}: {ratio:.2f}x "
            f"(target >= {THROUGHPUT_TARGET:g}x: {verdict})"
        )
    print()

    assert fig.denied is not None
    run, calls = fig.denied, sum(fig.deny_ops.values())
    print(
        f"5. tenant out of budget, {CLIENT_THREADS} client threads, {run.seconds:.1f} s "
        f"(CYCLES_DENY_CACHE_MS={DENY_CACHE_MS})"
    )
    v = run.latencies_ms
    print(f"   402 answers/s {run.rate:.0f}   p50 {pct(v, 0.5):.2f} ms   p99 {pct(v, 0.99):.2f} ms")
    print(
        f"   Cycles requests {calls} ({fmt_ops(fig.deny_ops)}): {calls / run.seconds:.2f}/s, "
        f"{calls / run.seconds / WORKERS:.2f}/s per worker (expect <= ~1); "
        f"{calls / run.count:.5f} per 402"
    )
    print(f"   (first 1 s of the burst, unmeasured: Cycles {fmt_ops(fig.cold_deny_ops)})\n")

    print(
        f"6. worker RSS (VmRSS), {fig.memory_requests} requests over {fig.memory_seconds:.1f} s "
        f"(both workers; 2 guarded JSON : 1 guarded stream : 1 cached 402)"
    )
    print(f"   {'pid':>8}{'boot':>8}{'warm':>8}{'before':>8}{'after':>8}{'growth':>9}   (MB)")
    before, after = fig.rss[2], fig.rss[3]
    for pid in sorted(after):
        growth = (after[pid] - before[pid]) / before[pid] * 100
        verdict = "OK" if growth <= 10 else "OVER"
        cells = "".join(f"{r[pid] / 1024:>8.1f}" for r in fig.rss)
        print(f"   {pid:>8}{cells}{growth:>8.1f}%  (target <= 10%: {verdict})")
    print("   boot: after start-up; warm: after the warm-up; before/after: the phase above")
    print(
        "   RSS MB after each batch: "
        + "; ".join(
            f"{n}: " + "/".join(f"{kb / 1024:.1f}" for _, kb in sorted(rss.items()))
            for n, rss in fig.rss_trail
        )
    )
    print(f"   Cycles requests during the phase: {fmt_ops(fig.memory_ops)}")


if __name__ == "__main__":
    sys.exit(main())
