"""Benchmark the generated app under gunicorn: what the budget guard costs per request.

Bakes the default project into a temporary directory and serves it with gunicorn (2 gthread
workers x 8 threads, APP_ENV=development, the embedded Cycles ledger of each worker on one
SQLite file, the fake LLM provider, a large budget via CYCLES_LOCAL_BUDGET_USD). Then, side
by side in one run (read the ratios more than the absolute figures: the machine is shared):

1. Cycles requests per request, counted at the embedded server by method and path: served
   JSON and streamed ``POST /chat`` (expect 2.00: reserve, commit), a denial Cycles answers
   (expect at most 1), a denial the deny cache answers (expect 0), the unguarded twin (0);
2. latency, one keep-alive client, of ``POST /chat`` guarded and of its unguarded twin,
   interleaved in blocks of 50 (p50/p90/p99; the guard's p50 overhead target: <= 5 ms);
3. streaming (``"stream": true``), one client: time to the first server-sent event and to
   the end of ``event: done``, guarded and unguarded twin;
4. throughput with 8 client threads, JSON and streamed, guarded/unguarded (target >= 0.2x),
   in interleaved rounds, with the CPU each request cost: the workers' app threads, their
   embedded ledgers' threads, and the load client (from /proc; 10 ms clock ticks), and the
   CPU-bound ratio (unguarded/guarded CPU per request): what req/s would show on a
   saturated machine of our own, and much steadier than req/s when others share it;
5. a tenant out of budget hammered by 8 client threads: 402s/s and Cycles calls/s (the deny
   cache should hold it to about one reservation attempt per second per worker);
6. RSS (VmRSS) of each worker before and after 10,000 more requests (JSON, streamed, 402);
7. after gunicorn has stopped, where the guard's time goes, in this process with the same
   app (Flask test client), the ledger now in its own process (``python -m localcycles`` on
   the same file) so that this process's CPU is the app's alone: wall p50 and CPU per call
   of the guarded and unguarded routes, the guard's own reserve + settle, the same two calls
   as bare runcycles calls and over http.client, runcycles' ``stream_reservation`` (the
   previous guard's path), the helper thread that bounds each provider call, and empty
   round trips to the ledger. The app's log lines of this phase go to a file, not stderr.

Then a summary of the figures against their targets.

The unguarded twin, without a production kill switch: gunicorn serves a bench-only WSGI
module written into the temp dir (``bench_wsgi:create_bench_app()``). It builds the app with
``create_app()`` and adds ``POST /bench/chat-unguarded``, which authenticates the caller as
``/chat`` does, parses the body with the same ``routes.chat_call`` and then runs ``/chat``'s
own view function (``inspect.unwrap(routes.chat)``, the function under ``@guarded``) with an
``UnguardedCall``: the same provider call (``complete``, or ``stream`` framed by the same
``sse`` module and ending with the same ``done`` summary) and the same answer, but no
reservation, no commit, no heartbeat, no helper thread. The difference between the two
routes is what the Cycles guard costs.

Cycles requests are counted at the server: the same module wraps the embedded server's
request dispatcher (``localcycles.routes.Api.dispatch``), so that each request it answers
appends one line ``METHOD /path`` (reservation ids replaced by ``{id}``) to a file shared by
both workers (one O_APPEND write each). Client retries and background settlements count.

    .venv/bin/python bench/bench_app.py [--seconds 4] [--latency-requests 600]
        [--memory-requests 10000] [--workers 2] [--rev REV] [--localcycles-rev REV]

``--rev REV`` bakes the template as committed at REV (e.g. HEAD) instead of the working
tree; ``--localcycles-rev REV`` replaces the bake's embedded server (``src/localcycles``)
with the one committed at REV, for when the working tree's is mid-change.
Bounded: about 2 minutes on 2 CPUs; the gunicorn process group is killed in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import logging
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")
WORKERS = 2  # the default of --workers
THREADS = 8
CLIENT_THREADS = 8
ROUNDS = 4  # throughput: each route and kind runs in ROUNDS interleaved slices
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

import inspect
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from localcycles.http import routes as cycles_routes

from PKG import callers, create_app
from PKG.budget import pricing
from PKG.web import routes, sse
from PKG.web.bodies import json_body, validate
from PKG.web.guard import GuardedCompletion, LlmCall
from PKG.web.schemas import ChatRequest
from PKG.llm import LLMProvider, StreamProgress

_RESERVATION_ID = re.compile(r"^/v1/reservations/[^/]+")


def count_cycles_requests(directory: str) -> None:
    """Every request the embedded server answers appends ``METHOD /path`` to a shared log;
    the first one also names this worker's server threads (see record_ledger_threads)."""
    fd = os.open(
        os.path.join(directory, "cycles-requests.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    dispatch = cycles_routes.Api.dispatch
    recorded: list[bool] = []

    def counting_dispatch(self: Any, req: Any) -> Any:
        if not recorded:
            recorded.append(True)
            record_ledger_threads(directory)
        path = _RESERVATION_ID.sub("/v1/reservations/{id}", req.path)
        os.write(fd, f"{req.method} {path}\\n".encode())
        return dispatch(self, req)

    cycles_routes.Api.dispatch = counting_dispatch


def record_ledger_threads(directory: str) -> None:
    """Name this worker's embedded-server threads, so the bench can split its CPU time.

    Written when the server answers its first request (the app may start it lazily).
    """
    names = {
        thread.native_id: thread.name
        for thread in threading.enumerate()
        if thread.name.startswith("localcycles") and thread.native_id is not None
    }
    path = os.path.join(directory, f"threads-{os.getpid()}.json")
    with open(f"{path}.tmp", "w") as out:
        json.dump(names, out)
    os.replace(f"{path}.tmp", path)  # the bench waits for this file: never half written


def create_bench_app(overrides: Mapping[str, str] | None = None) -> Flask:
    bench_dir = os.environ.get("BENCH_DIR")
    if bench_dir:
        count_cycles_requests(bench_dir)
    app = create_app(overrides)
    twin = Blueprint("bench", __name__, url_prefix="/bench")
    twin.before_request(callers.authenticate)
    twin.post("/chat-unguarded")(chat_unguarded)
    app.register_blueprint(twin)
    return app


class UnguardedCall:
    """What ``@guarded`` hands its view, minus Cycles: the same provider call, no hold."""

    def __init__(self, call: LlmCall, provider: LLMProvider) -> None:
        self.call = call
        self.provider = provider
        self.max_tokens = call.max_tokens

    def complete(self) -> GuardedCompletion:
        call = self.call
        completion = self.provider.complete(
            prompt=call.prompt, max_tokens=call.max_tokens, system=call.system
        )
        cost = pricing.cost(completion.input_tokens, completion.output_tokens)
        return GuardedCompletion(completion, call.max_tokens, cost)

    def stream(self) -> Response:
        return sse.response(stream_unguarded(self.provider, self.call))


def chat_unguarded() -> Response:
    """POST /chat's own view, undecorated: same auth, parsing, provider and answer."""
    settings = current_app.extensions["settings"]
    call = routes.chat_call(validate(ChatRequest, json_body(), settings), settings)
    view: Any = inspect.unwrap(routes.chat)  # the function under @guarded (functools.wraps)
    response: Response = view(UnguardedCall(call, current_app.extensions["llm"]))
    return response


def stream_unguarded(provider: LLMProvider, call: LlmCall) -> Iterator[bytes]:
    progress = StreamProgress()
    deltas = provider.stream(
        prompt=call.prompt, max_tokens=call.max_tokens, system=call.system, progress=progress
    )
    for delta in deltas:
        yield sse.event("delta", {"text": delta})
    usage = {
        "input_tokens": progress.input_tokens or 0,
        "output_tokens": progress.output_tokens or 0,
    }
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

    def __add__(self, other: Run) -> Run:
        return Run(
            self.count + other.count,
            self.seconds + other.seconds,
            self.latencies_ms + other.latencies_ms,
            self.first_event_ms + other.first_event_ms,
        )


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
) -> Run:
    """Send requests from ``threads`` keep-alive clients for ``seconds`` or ``requests``.

    Any other status than ``expect`` fails the benchmark.
    """
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: Path) -> float:
    """utime + stime of a process or thread (a process's includes its exited threads)."""
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


class CpuMeter:
    """CPU seconds used so far by the workers' app threads, their embedded ledgers, and
    this process (the load clients)."""

    def __init__(self, pids: list[int], threads_dir: Path) -> None:
        self.pids = pids
        self.ledger_tids = {
            pid: [int(tid) for tid in json.loads((threads_dir / f"threads-{pid}.json").read_text())]
            for pid in pids
        }

    def read(self) -> dict[str, float]:
        used = {"app": 0.0, "ledger": 0.0, "client": time.process_time()}
        for pid in self.pids:
            ledger = sum(
                cpu_seconds(Path(f"/proc/{pid}/task/{tid}/stat")) for tid in self.ledger_tids[pid]
            )
            used["ledger"] += ledger
            used["app"] += cpu_seconds(Path(f"/proc/{pid}/stat")) - ledger
        return used


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def bake(workdir: Path, rev: str | None, localcycles_rev: str | None) -> tuple[Path, str]:
    """Bake the default project: from the working tree, or as the template was at ``rev``."""
    template = TEMPLATE
    if rev is not None:
        template = workdir / "template"
        template.mkdir()
        archive = git_archive(rev)
        if archive is None:
            raise RuntimeError(f"git archive {rev} failed")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(template, filter="data")
    subprocess.run(
        [str(COOKIECUTTER), "--no-input", "-o", str(workdir / "bake"), str(template)],
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
        archive = git_archive(rev, home)
        if archive is not None:
            break
    else:
        raise RuntimeError(f"no localcycles package at {rev}")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                name = member.name[len(home) + 1 :]
                source = tar.extractfile(member)
                assert source is not None
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(source.read())


def git_archive(rev: str, *paths: str) -> bytes | None:
    """``git archive`` of this repository at ``rev`` (a tar), or None if it has no such path."""
    archive = subprocess.run(
        ["git", "-C", str(TEMPLATE), "archive", rev, *paths], capture_output=True, check=False
    )
    return archive.stdout if archive.returncode == 0 else None


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


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send this process's stderr (fd 2) to ``path``; on an error, replay its tail."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            print(path.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def wait_for_workers(proc: subprocess.Popen[bytes], count: int) -> list[int]:
    """The worker pids, once gunicorn has forked all ``count`` of them."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = worker_pids(proc.pid)
        if len(pids) == count:
            return pids
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not boot {count} workers in time")


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
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # label: CPU s by part
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


def measure(
    port: int,
    log: CyclesRequestLog,
    cpu: CpuMeter,
    args: argparse.Namespace,
    pids: list[int],
    boot_rss: dict[int, int],
) -> Figures:
    """Phases 1-6, on the warmed-up server."""
    fig = Figures()
    fig.rss += [boot_rss, {pid: rss_kb(pid) for pid in pids}]

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

    # Throughput, 8 client threads: rounds of every route and kind in turn, so that other
    # load on the machine hits them alike.
    for _ in range(ROUNDS):
        for kind, stream in (("JSON", False), ("stream", True)):
            for name, path in routes:
                before = cpu.read()
                run = load(
                    *(port, RICH, path, 200),
                    threads=CLIENT_THREADS,
                    seconds=args.seconds / ROUNDS,
                    stream=stream,
                )
                label = f"{name} {kind}"
                total = fig.cpu.setdefault(label, dict.fromkeys(before, 0.0))
                for part, seconds in cpu.read().items():
                    total[part] += seconds - before[part]
                fig.throughput[label] = (
                    fig.throughput[label] + run if label in fig.throughput else run
                )
                fig.count_ops(label, run.count, log.take())

    # Denials, on one keep-alive connection (so one worker). Uncached: each request asks
    # less than the one before, so the deny cache cannot answer it (a cached denial covers
    # only estimates >= its own). Cached: the last body again, well within the 1 s window.
    client = Client(port, BROKE)
    try:
        descending = [chat_body(max_tokens) for max_tokens in range(1000, 900, -1)]
        for phase, bodies in (("uncached", descending), ("cached", descending[-1:] * 100)):
            for body in bodies:
                status, _ = client.post(GUARDED, body)
                if status != 402:
                    raise RuntimeError(f"{BROKE}: HTTP {status}, expected 402")
            fig.count_ops(f"denied, {phase}", len(bodies), log.take())
    finally:
        client.close()
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
    parser.add_argument("--workers", type=int, default=WORKERS, help="gunicorn workers")
    parser.add_argument(
        "--rev", metavar="REV", help="bake the template as committed at REV (e.g. HEAD)"
    )
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
        project, package = bake(workdir, args.rev, args.localcycles_rev)
        (workdir / "bench_wsgi.py").write_text(WSGI_MODULE.replace("PKG", package))
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
            "WEB_CONCURRENCY": str(args.workers),
            "GUNICORN_THREADS": str(THREADS),
            "BENCH_DIR": str(workdir),
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
        pids = wait_for_workers(proc, args.workers)
        boot_rss = {pid: rss_kb(pid) for pid in pids}
        # Warm-up: every thread of every worker has made its Cycles clients and connections,
        # and every worker's embedded ledger has started (the app may start it lazily).
        for _ in range(5):
            for path in (GUARDED, UNGUARDED):
                load(port, RICH, path, 200, threads=CLIENT_THREADS, requests=400)
                load(port, RICH, path, 200, threads=CLIENT_THREADS, requests=100, stream=True)
            if all((workdir / f"threads-{pid}.json").exists() for pid in pids):
                break
        else:
            raise RuntimeError("a worker's embedded ledger never answered")

        # Every worker has seeded the ledger; now empty BROKE's budget (the embedded
        # ledger takes writes from any process on the same file).
        sys.path[:0] = [str(project / "src"), str(workdir)]
        from importlib import import_module

        localcycles = import_module("localcycles")
        ledger = localcycles.LocalLedger(str(db))
        ledger.set_budget(_scope_of(ledger, BROKE), "USD_MICROCENTS", allocated=0)
        ledger.close()

        cpu = CpuMeter(pids, workdir)
        log = CyclesRequestLog(workdir / "cycles-requests.log")
        log.take()  # the warm-up's
        figures = measure(port, log, cpu, args, pids, boot_rss)
        assert worker_pids(proc.pid) == pids, "a worker was restarted during the run"
        report(args, figures)
        stop(proc)
        proc = None
        # The in-process app logs each request to stderr: keep those lines out of the report.
        with stderr_to(workdir / "breakdown-stderr.log"):
            guard_breakdown(package, env, project, db, args.latency_requests)
        summary(figures)
        return 0
    except BaseException:
        if log_file is not None:
            log_file.flush()
            lines = (workdir / "gunicorn.log").read_text(errors="replace").splitlines()
            # Skip the access log and the app's own line per request.
            quiet = [x for x in lines if not x.startswith("127.") and "request_id=" not in x]
            tail = "\n".join(quiet[-60:])
            print(f"--- gunicorn log, without the access log ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if proc is not None:
            stop(proc)
        if log_file is not None:
            log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)


def start_ledger_process(project: Path, db: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m localcycles`` on ``db``: the ledger as its own process, like a real server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcycles", "--db", str(db)],
        env={**os.environ, "PYTHONPATH": str(project / "src")},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"python -m localcycles printed {url!r}, not its URL")
    return proc, url


def remote_ledger_settings(package: str, workspace_isolation: bool) -> dict[str, str]:
    """What the app needs on a Cycles URL instead of ``local``: the Cycles keys the embedded
    ledger seeded, and the development callers' key digests (dev defaults only apply to the
    embedded ledger)."""
    from importlib import import_module

    config = import_module(f"{package}.config")
    embedded = import_module(f"{package}.cycles.embedded_ledger")
    local_api_key: Callable[[str], str] = embedded.local_api_key
    callers = ",".join(
        f"{tenant}={config.hash_api_key(config.dev_caller_key(tenant))}"
        for tenant in config.DEV_TENANTS
    )
    if workspace_isolation:
        operator = config.DEV_OPERATOR_TENANT
        return {
            "TENANT_API_KEYS": callers,
            "CYCLES_TENANT": operator,
            "CYCLES_API_KEY": local_api_key(operator),
        }
    keys = ",".join(f"{tenant}={local_api_key(tenant)}" for tenant in config.DEV_TENANTS)
    return {"TENANT_API_KEYS": callers, "CYCLES_TENANT_API_KEYS": keys}


def guard_breakdown(package: str, env: dict[str, str], project: Path, db: Path, n: int) -> None:
    """Phase 7: the guard's parts one by one (single thread; wall p50, CPU mean of ``n`` each).

    The ledger runs in its own process here (``python -m localcycles`` on the same file), so
    the CPU figures are this process's alone: the app, the guard and the Cycles client.
    """
    from importlib import import_module

    ledger = import_module("localcycles").LocalLedger(str(db))
    workspace_isolation = _scope_of(ledger, RICH).startswith("tenant:operator/")
    ledger.close()
    cycles_clients = import_module(f"{package}.cycles.clients")
    keys = remote_ledger_settings(package, workspace_isolation)
    ledger_proc, ledger_url = start_ledger_process(project, db)
    try:
        app = import_module("bench_wsgi").create_bench_app(
            {
                **{k: v for k, v in env.items() if k.startswith(("APP_", "LLM_"))},
                "CYCLES_JOURNAL_DIR": env["CYCLES_JOURNAL_DIR"],
                "CYCLES_BASE_URL": ledger_url,
                **keys,
            }
        )
        # One log line per request would drown the figures: keep the request log quiet.
        logging.getLogger(f"{package}.requests").setLevel(logging.WARNING)
        try:
            time_guard_parts(app, package, ledger_url, keys, n)
        finally:
            cycles_clients.close(app)
    finally:
        ledger_proc.terminate()
        ledger_proc.wait(10)


def time_guard_parts(app: Any, package: str, ledger_url: str, keys: dict[str, str], n: int) -> None:
    """Time each part ``n`` times on ``app`` (its Cycles server at ``ledger_url``) and print."""
    import uuid
    from importlib import import_module

    import httpx

    state = import_module(f"{package}.state")
    reservations = import_module(f"{package}.budget.reservations")
    runcycles = import_module("runcycles")
    client = app.test_client()
    auth = {"Authorization": f"Bearer dev-key-{RICH}"}
    body = json.loads(JSON_BODY)
    stream_body = json.loads(STREAM_BODY)
    provider = app.extensions["llm"]
    budgets = state.cycles(app)
    cycles = budgets.client_for(RICH)
    subject = budgets.subject_for(RICH)
    action = runcycles.Action(kind="llm.completion", name="m")
    estimate = runcycles.Amount(unit=runcycles.Unit.USD_MICROCENTS, amount=10_000)
    floor = httpx.Client(base_url=ledger_url)
    host, port = ledger_url.removeprefix("http://").split(":")
    raw = http.client.HTTPConnection(host, int(port))
    raw_headers = {
        "Content-Type": "application/json",
        "X-Cycles-API-Key": keys.get("CYCLES_API_KEY")
        or dict(kv.split("=") for kv in keys["CYCLES_TENANT_API_KEYS"].split(","))[RICH],
    }
    usage = reservations.Usage(10, 13, "m", 1)
    wire = {"unit": "USD_MICROCENTS"}

    def reservation_body() -> dict[str, object]:
        return {
            "idempotency_key": uuid.uuid4().hex,
            "subject": budgets.subject_body(RICH),
            "action": reservations.action_body(budgets),
            "estimate": {**wire, "amount": 10_000},
            "ttl_ms": 60_000,
        }

    def commit_body() -> dict[str, object]:
        return {"idempotency_key": uuid.uuid4().hex, "actual": {**wire, "amount": 7_000}}

    def guard_calls() -> None:
        hold = reservations.reserve(budgets, RICH, "chat", 10_000)
        settled = reservations.settle(budgets, hold, 7_000, usage)
        assert settled is not None and settled.outcome == "committed", settled

    def bare() -> None:
        made = cycles.create_reservation(reservation_body())
        done = cycles.commit_reservation(made.body["reservation_id"], commit_body())
        assert done.status == 200, done.body

    def raw_post(path: str, payload: dict[str, object]) -> dict[str, object]:
        raw.request("POST", path, json.dumps(payload).encode(), raw_headers)
        response = raw.getresponse()
        answer: dict[str, object] = json.loads(response.read())
        assert response.status == 200, answer
        return answer

    def bare_http_client() -> None:
        made = raw_post("/v1/reservations", reservation_body())
        raw_post(f"/v1/reservations/{made['reservation_id']}/commit", commit_body())

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
        ("runcycles create + commit (2 calls)", bare),
        ("http.client create + commit (2 calls)", bare_http_client),
        ("runcycles stream_reservation", stream_reservation),
        ("provider.complete, direct", complete),
        ("provider.complete, bounded", lambda: budgets.provider_calls.run(complete, 30.0)),
        ("empty round trip, httpx", lambda: floor.get("/healthz")),
        ("empty round trip, http.client", raw_round_trip),
    ]
    print(
        "\n7. where the guard's time goes: one thread, in-process app (Flask test client, "
        "no HTTP\n   in front of Flask), the ledger in its own process; "
        f"wall p50 and this process's CPU per call, mean of {n}"
    )
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for label, call in parts:
        for _ in range(30):
            call()
        took = []
        cpu_start = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            took.append((time.perf_counter() - t0) * 1000)
        cpu[label] = (time.process_time() - cpu_start) * 1000 / n
        wall[label] = pct(took, 0.5)
        print(f"   {label:<40} wall {wall[label]:6.2f} ms   CPU {cpu[label]:6.2f} ms")

    def extra(measure: dict[str, float], guarded: str, twin: str) -> str:
        return f"{measure[guarded] - measure[twin]:+.2f} ms"

    json_pair = ("POST /chat guarded", "POST unguarded twin")
    stream_pair = ("POST /chat stream guarded", "POST stream unguarded twin")
    calls = "guard reserve + settle (2 calls)"
    thread = ("provider.complete, bounded", "provider.complete, direct")
    print(
        f"   guard overhead in-process: JSON wall {extra(wall, *json_pair)}, CPU "
        f"{extra(cpu, *json_pair)}; stream wall {extra(wall, *stream_pair)}, CPU "
        f"{extra(cpu, *stream_pair)}\n   of which the 2 Cycles calls: wall "
        f"{wall[calls]:.2f} ms, CPU {cpu[calls]:.2f} ms (runcycles alone: CPU "
        f"{cpu['runcycles create + commit (2 calls)']:.2f} ms; the same 2 calls over "
        f"http.client: CPU {cpu['http.client create + commit (2 calls)']:.2f} ms); the "
        f"helper thread per provider call: wall {extra(wall, *thread)}, CPU "
        f"{extra(cpu, *thread)}"
    )
    floor.close()
    raw.close()


def _scope_of(ledger: object, tenant: str) -> str:
    """The budget scope of app tenant ``tenant`` in the default bake (either isolation)."""
    budget: Callable[[str, str], object] = ledger.budget  # type: ignore[attr-defined]
    for scope in (f"tenant:operator/workspace:{tenant}", f"tenant:{tenant}"):
        if budget(scope, "USD_MICROCENTS") is not None:
            return scope
    raise RuntimeError(f"no budget for {tenant}")


def fmt_ops(ops: Counter[str], per: int | None = None) -> str:
    """Cycles requests by path: counts, or per request when ``per`` requests made them."""
    return (
        ", ".join(f"{k} {v if per is None else f'{v / per:.2f}'}" for k, v in sorted(ops.items()))
        or "none"
    )


def report(args: argparse.Namespace, fig: Figures) -> None:
    cpus = os.cpu_count()
    print(
        f"gunicorn gthread {args.workers} workers x {THREADS} threads, embedded ledger, fake LLM;"
    )
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
        first, done = fig.first_event[name], fig.stream_total[name]
        print(
            f"   {name:<28}{len(first):>6}{pct(first, 0.5):>9.2f}{pct(first, 0.9):>9.2f}"
            f"{pct(done, 0.5):>10.2f}{pct(done, 0.9):>10.2f}"
        )
    gf, uf = fig.first_event["guarded"], fig.first_event["unguarded"]
    gt, ut = fig.stream_total["guarded"], fig.stream_total["unguarded"]
    print(
        f"   time to first event: p50 {pct(gf, 0.5) - pct(uf, 0.5):+.2f} ms, "
        f"p90 {pct(gf, 0.9) - pct(uf, 0.9):+.2f} ms over the twin "
        f"(ratio {pct(gf, 0.5) / pct(uf, 0.5):.2f}x); to done: p50 "
        f"{pct(gt, 0.5) - pct(ut, 0.5):+.2f} ms\n"
    )

    print(
        f"4. throughput, {CLIENT_THREADS} client threads, {args.seconds:g} s each "
        f"(in {ROUNDS} interleaved rounds)"
    )
    print(
        f"   {'route':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        "   CPU ms per request: app, ledger, load client = total"
    )
    for label, run in fig.throughput.items():
        v = run.latencies_ms
        ms = {part: seconds * 1000 / run.count for part, seconds in fig.cpu[label].items()}
        print(
            f"   {label:<28}{run.rate:>9.0f}{pct(v, 0.5):>9.2f}{pct(v, 0.99):>9.2f}"
            f"   {ms['app']:6.2f} {ms['ledger']:6.2f} {ms['client']:6.2f} = "
            f"{sum(ms.values()):.2f}"
        )
    for kind in ("JSON", "stream"):
        ratio = fig.throughput[f"guarded {kind}"].rate / fig.throughput[f"unguarded {kind}"].rate
        verdict = "OK" if ratio >= THROUGHPUT_TARGET else "UNDER"
        extra = {
            part: fig.cpu[f"guarded {kind}"][part] * 1000 / fig.throughput[f"guarded {kind}"].count
            - fig.cpu[f"unguarded {kind}"][part] * 1000 / fig.throughput[f"unguarded {kind}"].count
            for part in ("app", "ledger", "client")
        }
        print(
            f"   guarded/unguarded {kind}: {ratio:.2f}x "
            f"(target >= {THROUGHPUT_TARGET:g}x: {verdict}); the guard's extra CPU per request: "
            f"app {extra['app']:+.2f} ms, embedded ledger {extra['ledger']:+.2f} ms"
        )
        print(
            f"     CPU-bound ratio (unguarded/guarded CPU per request, steadier than req/s on "
            f"a shared machine): {cpu_ratio(fig, kind, ('app', 'ledger', 'client')):.2f}x all "
            f"on this machine, {cpu_ratio(fig, kind, ('app',)):.2f}x the app alone"
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
        f"{calls / run.seconds / args.workers:.2f}/s per worker (expect <= ~1); "
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


def cpu_ratio(fig: Figures, kind: str, parts: tuple[str, ...]) -> float:
    """Unguarded/guarded CPU per request of ``parts``: the throughput ratio if CPU-bound."""

    def per_request(name: str) -> float:
        label = f"{name} {kind}"
        return sum(fig.cpu[label][part] for part in parts) / fig.throughput[label].count

    return per_request("unguarded") / per_request("guarded")


def summary(fig: Figures) -> None:
    """The figures issue 10 asks for, side by side with their targets."""

    def per_request(label: str) -> str:
        n, ops = fig.ops[label]
        return f"{sum(ops.values()) / n:.2f}"

    def over(a: list[float], b: list[float], q: float) -> str:
        return f"{pct(a, q) - pct(b, q):+.2f} ms"

    def ratio(kind: str) -> str:
        rate = fig.throughput[f"guarded {kind}"].rate / fig.throughput[f"unguarded {kind}"].rate
        return f"{rate:.2f}x"

    g, u = fig.latency["guarded"], fig.latency["unguarded"]
    gf, uf = fig.first_event["guarded"], fig.first_event["unguarded"]
    print("\nSummary (before the one-reservation guard: 3.00 calls, +13 ms p50, 0.07x)")
    print(
        f"   Cycles requests per served request: JSON {per_request('guarded JSON')}, "
        f"stream {per_request('guarded stream')} (target 2.00); per denial: uncached "
        f"{per_request('denied, uncached')} (target <= 1), cached "
        f"{per_request('denied, cached')} (target 0)"
    )
    print(
        f"   guard overhead over the unguarded twin, 1 client: p50 {over(g, u, 0.5)}, "
        f"p90 {over(g, u, 0.9)} (target p50 <= {LATENCY_TARGET_MS:g} ms)"
    )
    print(
        f"   guarded/unguarded throughput, {CLIENT_THREADS} client threads: JSON "
        f"{ratio('JSON')}, stream {ratio('stream')} (target >= {THROUGHPUT_TARGET:g}x); "
        f"CPU-bound: JSON {cpu_ratio(fig, 'JSON', ('app', 'ledger', 'client')):.2f}x, "
        f"stream {cpu_ratio(fig, 'stream', ('app', 'ledger', 'client')):.2f}x"
    )
    print(
        f"   stream, time to first event: p50 {pct(gf, 0.5):.2f} ms vs {pct(uf, 0.5):.2f} ms "
        f"unguarded ({over(gf, uf, 0.5)}), p90 {over(gf, uf, 0.9)}"
    )


if __name__ == "__main__":
    sys.exit(main())
