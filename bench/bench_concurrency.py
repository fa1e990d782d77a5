"""Benchmark: many simultaneous guarded LLM calls at a real provider's pace (issue 22).

Starts a paced fake OpenAI-compatible provider of its own (asyncio, its own process:
``POST /v1/chat/completions``, JSON or streamed with ``stream_options.include_usage``: 0.5 s
to the first token, then 20 deltas 50 ms apart, 1.5 s a call; it counts the calls it has
open at once), bakes the default project (``llm_provider=openai``; the SDK reads
``OPENAI_BASE_URL``, pointed at the fake), and serves it with the bake's own
``gunicorn.conf.py`` (production server settings; ``APP_ENV=development`` for the dev
callers' keys) once per worker class (``GUNICORN_WORKER_CLASS``: gevent, gthread).

The Cycles ledger is the development one (``localcycles`` on one SQLite file): by default
as its own process (``--ledger process``, ``python -m localcycles``, the way a shared Cycles
server sits beside the app hosts, so its CPU is measured apart), or the embedded ledger in
every worker (``--ledger embedded``, the ``CYCLES_BASE_URL=local`` default of development;
its CPU is then part of the app's).

For each size (64, 256, 1,000), kind (stream, JSON) and route, N callers connect at once
(an asyncio client in this process; HTTP/1.0, one connection each) and the bench prints:
wall time of the whole burst / the time of one call alone, p50 and p99 of the callers'
times, how many ended well (streams: an ``event: done``), the most calls the provider
had open at once, CPU per call of the app (gunicorn's process tree), the ledger process,
the fake provider and the load client (utime + stime from /proc), memory per call in
flight (the workers' peak RSS during the burst minus before, / the calls the server held
at once: N under gevent, workers x threads under gthread), and whether the ledger is
exact: each tenant's ``spent`` grew by exactly the sum of the costs the app reported to
its callers, and nothing is left reserved.

Routes: ``/chat`` (guarded) and ``/bench/chat-unguarded``, its unguarded twin, served by
the same app (a bench-only WSGI module written into the temp dir): the same caller
authentication, body schema, provider client (the app's OpenAI SDK client), SSE framing and
answer shape, but no reservation, no commit, no heartbeat and no provider deadline thread.

The machine is shared: read the ratios between columns of one run more than the absolute
figures.

    .venv/bin/python bench/bench_concurrency.py [--sizes 64,256,1000] [--quick]
        [--worker-classes gevent,gthread] [--kinds stream,json] [--routes guarded,unguarded]
        [--workers N] [--worker-connections N] [--ledger process|embedded]
        [--profile DIR]  # py-spy (PY_SPY=path) records each worker during the bursts
        [--template DIR]  # another copy of the template (e.g. before a change)

``--quick``: sizes 64 only. gevent needs the ``gevent`` package in the interpreter that runs
the bench (gunicorn runs as ``sys.executable -m gunicorn``). Bounded: every call has a
deadline, every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent
PROMPT = "Say something about budgets."
TENANTS = ("acme", "globex")
GUARDED = "/chat"
UNGUARDED = "/bench/chat-unguarded"
FIRST_TOKEN_S = 0.5
DELTAS = 20
DELTA_GAP_S = 0.05
PROMPT_TOKENS = 12
CALL_DEADLINE_S = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------
# The paced fake provider (runs as its own process: ``--serve-provider``)
# ---------------------------------------------------------------------------------------


class FakeOpenAI:
    """OpenAI's Chat Completions at a real model's pace; counts the calls open at once."""

    def __init__(self) -> None:
        self.open_calls = 0
        self.most_open = 0
        self.served = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if target.startswith("/stats"):
                    stats = {"most_open": self.most_open, "served": self.served}
                    if "reset" in target:
                        self.most_open = self.open_calls
                    await self._send_json(writer, stats)
                elif method == "POST" and target.endswith("/chat/completions"):
                    await self._completion(writer, json.loads(body))
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                if version == "HTTP/1.0" or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _completion(self, writer: asyncio.StreamWriter, request: dict[str, Any]) -> None:
        self.open_calls += 1
        self.most_open = max(self.most_open, self.open_calls)
        try:
            model = request.get("model", "m")
            if request.get("stream"):
                await self._stream(writer, model)
            else:
                await asyncio.sleep(FIRST_TOKEN_S + DELTAS * DELTA_GAP_S)
                await self._send_json(writer, _completion_body(model))
            self.served += 1
        finally:
            self.open_calls -= 1

    async def _stream(self, writer: asyncio.StreamWriter, model: str) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        await asyncio.sleep(FIRST_TOKEN_S)
        for index in range(DELTAS):
            delta = {"content": f"word{index} "}
            if index == 0:
                delta["role"] = "assistant"
            chunk = _chunk(model, [{"index": 0, "delta": delta, "finish_reason": None}])
            writer.write(_http_chunk(b"data: " + chunk + b"\n\n"))
            await writer.drain()
            await asyncio.sleep(DELTA_GAP_S)
        last = _chunk(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        usage = _chunk(model, [], usage=_usage())
        writer.write(
            _http_chunk(b"data: " + last + b"\n\ndata: " + usage + b"\n\ndata: [DONE]\n\n")
            + b"0\r\n\r\n"
        )
        await writer.drain()

    @staticmethod
    async def _send_json(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": DELTAS,
        "total_tokens": PROMPT_TOKENS + DELTAS,
    }


def _chunk(model: str, choices: list[Any], usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body, separators=(",", ":")).encode()


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _completion_body(model: str) -> dict[str, Any]:
    text = "".join(f"word{index} " for index in range(DELTAS))
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }


def serve_provider() -> None:
    async def run() -> None:
        fake = FakeOpenAI()
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


# ---------------------------------------------------------------------------------------
# The app: a bench WSGI module with the unguarded twin
# ---------------------------------------------------------------------------------------

# ``PKG`` is replaced by the bake's package name.
WSGI_MODULE = '''\
"""Bench only: the app plus POST /bench/chat-unguarded, /chat without the budget guard."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, jsonify

from PKG import callers, create_app
from PKG.budget import pricing
from PKG.llm import StreamProgress
from PKG.web import routes, sse
from PKG.web.bodies import json_body, validate
from PKG.web.schemas import ChatRequest


def create_bench_app() -> Flask:
    app = create_app()
    twin = Blueprint("bench", __name__, url_prefix="/bench")
    twin.before_request(callers.authenticate)
    twin.post("/chat-unguarded")(chat_unguarded)
    app.register_blueprint(twin)
    return app


def chat_unguarded() -> Response:
    settings = current_app.extensions["settings"]
    call = routes.chat_call(validate(ChatRequest, json_body(), settings), settings)
    provider = current_app.extensions["llm"]
    if call.stream:
        return sse.response(_events(provider, call))
    completion = provider.complete(prompt=call.prompt, max_tokens=call.max_tokens)
    return jsonify(
        text=completion.text,
        model=completion.model,
        max_tokens=call.max_tokens,
        usage={
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        },
        cost_usd_microcents=pricing.cost(completion.input_tokens, completion.output_tokens),
    )


def _events(provider, call) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    progress = StreamProgress()
    for delta in provider.stream(
        prompt=call.prompt, max_tokens=call.max_tokens, progress=progress
    ):
        yield sse.event("delta", {"text": delta})
    usage = {"input_tokens": progress.input_tokens or 0,
             "output_tokens": progress.output_tokens or 0}
    yield sse.event("done", {
        "model": progress.model or provider.model,
        "max_tokens": call.max_tokens,
        "usage": usage,
        "cost_usd_microcents": pricing.cost(usage["input_tokens"], usage["output_tokens"]),
    })
'''

# ---------------------------------------------------------------------------------------
# Processes: CPU, memory, start and stop
# ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += descendants(int(child))
    return found


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stop_group(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start_reading_line(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[Any, str]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        stop_group(proc)
        raise RuntimeError(f"{cmd[:3]} printed nothing")
    return proc, line


def bake(workdir: Path, template: Path) -> tuple[Path, str]:
    cookiecutter = Path(sys.executable).with_name("cookiecutter")
    if not cookiecutter.exists():
        cookiecutter = TEMPLATE / ".venv" / "bin" / "cookiecutter"
    subprocess.run(
        [str(cookiecutter), "--no-input", "-o", str(workdir / "bake"), str(template),
         "llm_provider=openai"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    (project,) = (workdir / "bake").iterdir()
    (package,) = (
        p.name
        for p in (project / "src").iterdir()
        if (p / "__init__.py").exists() and p.name != "localcycles"
    )
    return project, package


def seed_ledger(project: Path, package: str, db: Path, env: dict[str, str]) -> dict[str, str]:
    """Create the dev tenants' budgets and keys in ``db`` (as the embedded ledger does on
    first start) and return the settings the app needs to use it as a remote Cycles
    server: the Cycles keys, and the dev callers' key digests."""
    code = f"""
import json
from {package} import create_app
from {package}.config import DEV_TENANTS, DEV_OPERATOR_TENANT, dev_caller_key, hash_api_key
from {package}.cycles.clients import close, local_server
from {package}.cycles.embedded_ledger import local_api_key
app = create_app()
local_server(app)
close(app)
print(json.dumps({{
    "callers": ",".join(f"{{t}}={{hash_api_key(dev_caller_key(t))}}" for t in DEV_TENANTS),
    "operator": DEV_OPERATOR_TENANT,
    "operator_key": local_api_key(DEV_OPERATOR_TENANT),
    "tenant_keys": ",".join(f"{{t}}={{local_api_key(t)}}" for t in DEV_TENANTS),
}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "CYCLES_BASE_URL": "local"},
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"seeding the ledger failed:\n{done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if any(scope.startswith("tenant:operator/") for scope in tenant_scopes(db).values()):
        return {
            "TENANT_API_KEYS": found["callers"],
            "CYCLES_TENANT": found["operator"],
            "CYCLES_API_KEY": found["operator_key"],
        }
    return {"TENANT_API_KEYS": found["callers"], "CYCLES_TENANT_API_KEYS": found["tenant_keys"]}


def tenant_scopes(db: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        scopes = [row[0] for row in conn.execute("SELECT scope FROM budgets")]
    found = {}
    for tenant in TENANTS:
        for scope in (f"tenant:operator/workspace:{tenant}", f"tenant:{tenant}"):
            if scope in scopes:
                found[tenant] = scope
    return found


def ledger_rows(db: Path, scopes: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(spent, reserved) of each tenant's budget."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        rows = {
            scope: (spent, reserved)
            for scope, spent, reserved in conn.execute(
                "SELECT scope, spent, reserved FROM budgets WHERE unit = 'USD_MICROCENTS'"
            )
        }
    return {tenant: rows[scope] for tenant, scope in scopes.items()}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    workers: list[int]
    log: Path


@contextlib.contextmanager
def gunicorn(
    project: Path, workdir: Path, env: dict[str, str], worker_class: str, args: argparse.Namespace
) -> Iterator[Server]:
    port = free_port()
    conf = project / "gunicorn.conf.py"
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", f"127.0.0.1:{port}"]
    if "GUNICORN_WORKER_CLASS" not in conf.read_text():
        cmd += ["--worker-class", worker_class]  # a bake from before the setting existed
    cmd.append("bench_wsgi:create_bench_app()")
    log = workdir / f"gunicorn-{worker_class}.log"
    server_env = {
        **env,
        "GUNICORN_WORKER_CLASS": worker_class,
        "WEB_CONCURRENCY": str(args.workers),
    }
    if args.worker_connections:
        server_env["GUNICORN_WORKER_CONNECTIONS"] = str(args.worker_connections)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=server_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            workers = [
                int(c)
                for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            ]
            if len(workers) == args.workers and asyncio.run(_healthy(port)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(proc, port, sorted(workers), log)
    finally:
        stop_group(proc)


async def _healthy(port: int) -> bool:
    try:
        status, _, _ = await http_call(port, "GET", "/healthz", b"", {}, timeout=5)
    except (TimeoutError, OSError):
        return False
    return status == 200


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------
# The load client: asyncio, one HTTP/1.0 connection per call
# ---------------------------------------------------------------------------------------


async def http_call(
    port: int, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, bytes, float | None]:
    """(status, body, seconds to the first SSE event) of one request on its own connection."""

    async def run() -> tuple[int, bytes, float | None]:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            data = bytearray()
            first: float | None = None
            while chunk := await reader.read(65536):
                data += chunk
                if first is None and b"\nevent: " in data:
                    first = time.perf_counter() - started
            status_line, _, rest = bytes(data).partition(b"\r\n")
            status = int(status_line.split()[1]) if status_line else 0
            return status, rest.partition(b"\r\n\r\n")[2], first
        finally:
            writer.close()

    return await asyncio.wait_for(run(), timeout)


@dataclass
class Outcome:
    tenant: str
    seconds: float
    ok: bool
    cost: int
    detail: str = ""
    first_event: float | None = None


async def one_call(port: int, path: str, stream: bool, tenant: str) -> Outcome:
    body = json.dumps({"prompt": PROMPT, "max_tokens": 64, "stream": stream}).encode()
    headers = {"Authorization": f"Bearer dev-key-{tenant}", "Content-Type": "application/json"}
    started = time.perf_counter()
    try:
        status, data, first = await http_call(port, "POST", path, body, headers, CALL_DEADLINE_S)
    except (TimeoutError, OSError) as exc:
        return Outcome(tenant, time.perf_counter() - started, False, 0, repr(exc))
    seconds = time.perf_counter() - started
    if status != 200:
        return Outcome(tenant, seconds, False, 0, f"HTTP {status} {data[:120]!r}")
    try:
        if stream:
            events = data.split(b"\n\n")
            done = [e for e in events if e.startswith(b"event: done\n")]
            if not done:
                return Outcome(tenant, seconds, False, 0, f"no done event: {data[-160:]!r}")
            summary = json.loads(done[-1].split(b"data: ", 1)[1])
        else:
            summary = json.loads(data)
    except (ValueError, IndexError) as exc:
        return Outcome(tenant, seconds, False, 0, f"unreadable answer: {exc}")
    return Outcome(tenant, seconds, True, int(summary["cost_usd_microcents"]), "", first)


async def burst(port: int, path: str, stream: bool, size: int) -> tuple[float, list[Outcome]]:
    started = time.perf_counter()
    calls = [one_call(port, path, stream, TENANTS[i % len(TENANTS)]) for i in range(size)]
    outcomes = await asyncio.gather(*calls)
    return time.perf_counter() - started, list(outcomes)


async def provider_stats(port: int, reset: bool = False) -> dict[str, int]:
    _, data, _ = await http_call(port, "GET", "/stats?reset" if reset else "/stats", b"", {}, 10)
    stats: dict[str, int] = json.loads(data)
    return stats


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------


@dataclass
class Row:
    worker_class: str
    route: str
    kind: str
    size: int
    one_call_s: float
    wall_s: float
    times: list[float]
    ok: int
    most_open: int
    in_flight: int  # requests the server holds at once: min(N, its capacity)
    cpu: dict[str, float]
    rss_growth_kb: int
    exact: bool | None
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        times = sorted(self.times)
        p50 = times[len(times) // 2]
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        per = {k: 1000 * v / self.size for k, v in self.cpu.items()}
        mem = self.rss_growth_kb / max(1, self.in_flight)
        exact = {None: "-", True: "exact", False: "WRONG"}[self.exact]
        if self.exact is None and self.route == "guarded":
            exact = "n/a"  # some calls failed: their callers were not told a cost
        return (
            f"{self.worker_class:8} {self.route:9} {self.kind:6} {self.size:5} "
            f"{self.wall_s:7.2f} {self.wall_s / self.one_call_s:6.2f} {p50:6.2f} {p99:6.2f} "
            f"{self.ok:5} {self.most_open:5} {per['app']:7.2f} {per['ledger']:7.2f} "
            f"{per['provider']:7.2f} {per['client']:7.2f} {mem:7.1f} {exact:6}"
        )


HEADER = (
    f"{'worker':8} {'route':9} {'kind':6} {'N':>5} {'wall s':>7} {'x one':>6} {'p50 s':>6} "
    f"{'p99 s':>6} {'ok':>5} {'open':>5} {'app ms':>7} {'ldg ms':>7} {'prov ms':>7} "
    f"{'cli ms':>7} {'KB/call':>7} ledger"
)


class Meter:
    def __init__(self, app_pid: int, ledger_pid: int | None, provider_pid: int) -> None:
        self.pids = {"app": app_pid, "ledger": ledger_pid, "provider": provider_pid}

    def read(self) -> dict[str, float]:
        used = {
            name: (tree_cpu(pid) if pid is not None else 0.0) for name, pid in self.pids.items()
        }
        used["client"] = time.process_time()
        return used


async def measure_burst(
    server: Server,
    provider_port: int,
    meter: Meter,
    db: Path,
    scopes: dict[str, str],
    route: str,
    stream: bool,
    size: int,
) -> tuple[float, list[Outcome], dict[str, float], int, int, bool | None]:
    path = GUARDED if route == "guarded" else UNGUARDED
    await provider_stats(provider_port, reset=True)
    before_ledger = ledger_rows(db, scopes)
    idle_rss = sum(rss_kb(pid) for pid in server.workers)
    peak = [idle_rss]
    sampling = True

    async def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], sum(rss_kb(pid) for pid in server.workers))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    cpu_before = meter.read()
    wall, outcomes = await burst(server.port, path, stream, size)
    sampling = False
    await sampler
    # The ledger settles after the last byte: wait (bounded) for every hold to be settled.
    deadline = time.monotonic() + 30
    after = ledger_rows(db, scopes)
    while any(after[t][1] != 0 for t in after) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        after = ledger_rows(db, scopes)
    cpu_after = meter.read()
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
    most_open = (await provider_stats(provider_port))["most_open"]
    reported = {t: sum(o.cost for o in outcomes if o.tenant == t and o.ok) for t in scopes}
    spent = {t: after[t][0] - before_ledger[t][0] for t in scopes}
    if route == "guarded" and not all(o.ok for o in outcomes):
        # A call that failed was charged what it used, but its caller was not told a cost.
        exact = None if all(after[t][1] == 0 for t in scopes) else False
    elif route == "guarded":
        exact = all(spent[t] == reported[t] and after[t][1] == 0 for t in scopes)
        if not exact:
            print(f"    ledger: spent grew {spent}, callers were told {reported}, "
                  f"reserved now {({t: after[t][1] for t in after})}")  # fmt: skip
    else:
        exact = None if all(v == 0 for v in spent.values()) else False
    return wall, outcomes, cpu, peak[0] - idle_rss, most_open, exact


async def one_alone(server: Server, route: str, stream: bool) -> float:
    path = GUARDED if route == "guarded" else UNGUARDED
    times = []
    for _ in range(3):
        outcome = await one_call(server.port, path, stream, TENANTS[0])
        if not outcome.ok:
            raise RuntimeError(f"a single call failed: {outcome.detail}")
        times.append(outcome.seconds)
    return statistics.median(times)


def profile_workers(server: Server, directory: Path, label: str, seconds: float) -> list[Any]:
    spy = os.environ.get("PY_SPY", "py-spy")
    procs = []
    for pid in server.workers:
        out = directory / f"{label}-{pid}.txt"
        command = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
                   "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
        procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


async def run_server(
    server: Server,
    args: argparse.Namespace,
    worker_class: str,
    provider_port: int,
    meter: Meter,
    db: Path,
    scopes: dict[str, str],
) -> list[Row]:
    rows: list[Row] = []
    # How many requests the server holds at once (the rest wait in the listen backlog).
    per_worker = (args.worker_connections or 1000) if worker_class == "gevent" else 8
    capacity = args.workers * per_worker
    # Warm-up: every worker has built its clients and connections.
    for route in args.routes:
        for kind in args.kinds:
            await burst(server.port, GUARDED if route == "guarded" else UNGUARDED,
                        kind == "stream", 16)  # fmt: skip
    alone = {
        (route, kind): await one_alone(server, route, kind == "stream")
        for route in args.routes
        for kind in args.kinds
    }
    for size in args.sizes:
        for kind in args.kinds:
            for route in args.routes:
                spies = []
                if args.profile:
                    label = f"{worker_class}-{route}-{kind}-{size}"
                    spies = profile_workers(server, args.profile, label, 3 + size / 100)
                wall, outcomes, cpu, growth, most_open, exact = await measure_burst(
                    server, provider_port, meter, db, scopes, route, kind == "stream", size
                )
                for spy in spies:
                    spy.wait(120)
                errors = sorted({o.detail for o in outcomes if not o.ok})
                row = Row(
                    worker_class, route, kind, size, alone[(route, kind)], wall,
                    [o.seconds for o in outcomes], sum(o.ok for o in outcomes), most_open,
                    min(size, capacity), cpu, growth, exact, errors,
                )  # fmt: skip
                rows.append(row)
                print(row.line(), flush=True)
                for error in errors[:3]:
                    print(f"    error: {error[:200]}", flush=True)
                await asyncio.sleep(1)  # let keep-alive sockets and settlements drain
    return rows


def main() -> int:
    if sys.argv[1:] == ["--serve-provider"]:
        serve_provider()
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="64,256,1000")
    parser.add_argument("--quick", action="store_true", help="sizes 64 only")
    parser.add_argument("--worker-classes", default="gevent,gthread")
    parser.add_argument("--kinds", default="stream,json")
    parser.add_argument("--routes", default="guarded,unguarded")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-connections", type=int, default=0)
    parser.add_argument("--ledger", choices=("process", "embedded"), default="process")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles into this directory")
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE, help="bake this copy of the template"
    )
    args = parser.parse_args()
    args.sizes = [64] if args.quick else [int(s) for s in args.sizes.split(",")]
    args.kinds = args.kinds.split(",")
    args.routes = args.routes.split(",")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    started: list[subprocess.Popen[Any]] = []
    try:
        project, package = bake(workdir, args.template)
        (workdir / "bench_wsgi.py").write_text(WSGI_MODULE.replace("PKG", package))
        db = workdir / "ledger.sqlite3"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CYCLES_", "LLM_", "OPENAI_", "ANTHROPIC_", "TENANT", "FLASK_"))
            and k not in ("APP_ENV", "PROMETHEUS_MULTIPROC_DIR")
        }
        provider, provider_port_text = start_reading_line(
            [sys.executable, str(Path(__file__).resolve()), "--serve-provider"], clean, workdir
        )
        started.append(provider)
        provider_port = int(provider_port_text)
        env = {
            **clean,
            "PYTHONPATH": os.pathsep.join([str(project / "src"), str(workdir)]),
            "APP_ENV": "development",
            "FLASK_SKIP_DOTENV": "1",
            "LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{provider_port}/v1",
            "CYCLES_LOCAL_DB": str(db),
            "CYCLES_JOURNAL_DIR": str(workdir / "journal"),
            "CYCLES_LOCAL_BUDGET_USD": "1000000",
        }
        cycles = seed_ledger(project, package, db, env)
        ledger_pid = None
        if args.ledger == "process":
            ledger, url = start_reading_line(
                [sys.executable, "-m", "localcycles", "--db", str(db)],
                {**clean, "PYTHONPATH": str(project / "src")}, workdir,
            )  # fmt: skip
            started.append(ledger)
            ledger_pid = ledger.pid
            env.update(cycles, CYCLES_BASE_URL=url)
        else:
            env["CYCLES_BASE_URL"] = "local"
        scopes = tenant_scopes(db)
        print(
            f"# bench_concurrency: {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f} at start (the machine may be shared); "
            f"{args.workers} workers, ledger: {args.ledger}; one call alone ~"
            f"{FIRST_TOKEN_S + DELTAS * DELTA_GAP_S:.2f} s at the provider",
            flush=True,
        )
        print(
            "# CPU ms are per call; KB per call in flight at the server (gthread: 8 per"
            " worker); 'open': most calls open at once at the provider"
        )
        print(HEADER, flush=True)
        rows: list[Row] = []
        for worker_class in args.worker_classes.split(","):
            with gunicorn(project, workdir, env, worker_class, args) as server:
                meter = Meter(server.proc.pid, ledger_pid, provider.pid)
                rows += asyncio.run(
                    run_server(server, args, worker_class, provider_port, meter, db, scopes)
                )
        print(f"# load average at the end {os.getloadavg()[0]:.2f}")
        bad = [r for r in rows if r.ok != r.size or r.exact is False]
        return 1 if bad else 0
    finally:
        for proc in started:
            stop_group(proc)
        if os.environ.get("BENCH_KEEP"):
            print(f"# kept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
