"""gunicorn's gevent worker (the production default): many calls in flight at once, each
charged exactly, and a graceful shutdown that still commits the streams in flight (under
gthread too).

Each test starts the real server (``gunicorn -c gunicorn.conf.py``, one worker, the
embedded development ledger inside it) and talks to it over loopback sockets. The model
is the offline fake, held at its first delta until enough calls are open at once: what is
counted is how many calls the provider had open together, never how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcycles import LocalLedger
from support.callers_kit import dev_auth_headers
from support.gunicorn_kit import gunicorn
from support.tenancy_kit import budget_scope

TENANTS = ("acme", "globex")
PATIENCE_S = 120.0  # only stops a hang: nothing here asserts how fast anything is
# How gunicorn names each worker class in its log (serving/ names gthread's ThreadWorker).
WORKER_NAMES = {"gevent": "gevent", "gthread": "thread"}
# The old production server held 16 calls at once (2 workers x 8 threads): one gevent
# worker must hold far more.
OLD_CAPACITY = 16

# Served by gunicorn: the development app with a fake model that holds each call at its
# first delta until GATHER calls are open at once (or PATIENCE_S since the first of them
# opened), and a route that says how many calls it had open together.
SERVED_APP = """
import time

from flask import jsonify

from {package} import create_app
from {package}.llm import FakeProvider

GATHER = {gather}
PATIENCE_S = {patience}


class GatheringProvider(FakeProvider):
    open_calls = 0
    most_open = 0
    gathering_since = 0.0

    def stream(self, **call):
        cls = GatheringProvider
        cls.open_calls += 1
        cls.most_open = max(cls.most_open, cls.open_calls)
        if cls.open_calls == 1:
            cls.gathering_since = time.monotonic()
        try:
            # time.sleep yields to the other requests under gevent (monkey-patched).
            while cls.most_open < GATHER and time.monotonic() < cls.gathering_since + PATIENCE_S:
                time.sleep(0.01)
            yield from super().stream(**call)
        finally:
            cls.open_calls -= 1


app = create_app()
app.extensions["llm"] = GatheringProvider(
    app.extensions["settings"].llm_model, delta_delay_s={delta_delay}
)
app.add_url_rule(
    "/test/most-open", "most_open", lambda: jsonify(most=GatheringProvider.most_open)
)
"""


@dataclass
class Served:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ledger: Path


Serve = Callable[..., Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """``serve(gather=..., delta_delay=...)`` starts gunicorn (support/gunicorn_kit.py);
    stopped when the test ends."""
    with contextlib.ExitStack() as servers:

        def start(*, gather: int, delta_delay: float = 0.0, worker_class: str = "gevent") -> Served:
            (tmp_path / "served_app.py").write_text(
                SERVED_APP.format(
                    package="{{ cookiecutter.package_name }}",
                    gather=gather,
                    patience=PATIENCE_S / 4,
                    delta_delay=delta_delay,
                )
            )
            server = servers.enter_context(
                gunicorn(
                    tmp_path,
                    "served_app:app",
                    CYCLES_BASE_URL="local",
                    CYCLES_LOCAL_BUDGET_USD="1000",
                    GUNICORN_WORKER_CLASS=worker_class,
                    GUNICORN_THREADS="16",  # gthread only
                )
            )
            log = server.log_text().splitlines()
            (worker_line,) = [line for line in log if "Using worker:" in line]
            assert WORKER_NAMES[worker_class] in worker_line.lower(), worker_line
            return Served(
                f"http://127.0.0.1:{server.port}",
                server.port,
                server.process,
                server.log,
                tmp_path / "ledger.sqlite3",
            )

        yield start


def _get(served: Served, path: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(served.base + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.headers.get_content_type() == "application/json":
            return json.loads(response.read())
        return response.read().decode()


Writer = asyncio.StreamWriter


@dataclass
class Answer:
    tenant: str
    status: int
    events: list[dict[str, object]]

    @property
    def done(self) -> bool:
        return self.status == 200 and bool(self.events) and self.events[-1]["type"] == "done"

    @property
    def cost(self) -> int:
        cost = self.events[-1]["cost_usd_microcents"]
        assert isinstance(cost, int)
        return cost


async def _open_stream(port: int, tenant: str) -> tuple[asyncio.StreamReader, Writer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"prompt": "Say a few words.", "max_tokens": 32, "stream": True})
    headers = {**dev_auth_headers(tenant), "Content-Type": "application/json"}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(
        f"POST /chat HTTP/1.0\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    return reader, writer


def _answer(tenant: str, data: bytes) -> Answer:
    status_line, _, rest = data.partition(b"\r\n")
    events = [
        json.loads(line[len(b"data: ") :])
        for line in rest.partition(b"\r\n\r\n")[2].split(b"\n")
        if line.startswith(b"data: ")
    ]
    return Answer(tenant, int(status_line.split()[1]), events)


async def _stream(port: int, tenant: str) -> Answer:
    reader, writer = await _open_stream(port, tenant)
    try:
        return _answer(tenant, await reader.read())  # HTTP/1.0: the server closes at the end
    finally:
        writer.close()


def _warm_up(served: Served) -> None:
    """One JSON call per tenant: the embedded ledger has started and seeded the budgets."""
    for tenant in TENANTS:
        body = json.dumps({"prompt": "Hello.", "max_tokens": 8}).encode()
        headers = {**dev_auth_headers(tenant), "Content-Type": "application/json"}
        request = urllib.request.Request(served.base + "/chat", body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


def _streams(port: int, count: int) -> list[Answer]:
    async def run() -> list[Answer]:
        calls = (_stream(port, TENANTS[i % 2]) for i in range(count))
        return list(await asyncio.wait_for(asyncio.gather(*calls), PATIENCE_S))

    return asyncio.run(run())


def _spent_and_reserved(ledger_file: Path) -> dict[str, tuple[int, int]]:
    ledger = LocalLedger(str(ledger_file))
    try:
        figures = {}
        for tenant in TENANTS:
            budget = ledger.budget(budget_scope(tenant))
            assert budget is not None
            figures[tenant] = (int(str(budget["spent"])), int(str(budget["reserved"])))
        return figures
    finally:
        ledger.close()


def _settled(served: Served) -> dict[str, tuple[int, int]]:
    """Each tenant's (spent, reserved) once nothing is held (a stream settles at its end)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        figures = _spent_and_reserved(served.ledger)
        if all(reserved == 0 for _, reserved in figures.values()):
            return figures
        assert time.monotonic() < deadline, figures
        time.sleep(0.05)


def _charged_exactly(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], answers: list[Answer]
) -> None:
    for tenant in TENANTS:
        told = sum(answer.cost for answer in answers if answer.tenant == tenant)
        assert after[tenant][0] - before[tenant][0] == told, tenant
        assert after[tenant][1] == 0


def test_one_gevent_worker_holds_hundreds_of_streams_at_once_and_charges_each_exactly(
    serve: Serve,
) -> None:
    callers, gather = 300, 200
    served = serve(gather=gather)
    _warm_up(served)
    before = _settled(served)

    answers = _streams(served.port, callers)

    assert [answer.done for answer in answers] == [True] * callers
    most_open = _get(served, "/test/most-open")
    assert isinstance(most_open, dict)
    assert most_open["most"] >= gather > OLD_CAPACITY
    _charged_exactly(before, _settled(served), answers)
    # Prometheus' multiprocess files work under gevent: every commit was counted.
    metrics = _get(served, "/metrics")
    assert isinstance(metrics, str)
    committed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("cycles_settlements_total") and 'outcome="committed"' in line
    )
    assert committed >= callers + len(TENANTS)


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_shutdown_finishes_the_streams_in_flight_and_commits_them(
    serve: Serve, worker_class: str
) -> None:
    callers = 12
    # Paced: every call is open at once, then each needs many more deltas after SIGTERM.
    served = serve(gather=callers, delta_delay=0.05, worker_class=worker_class)
    _warm_up(served)
    before = _settled(served)

    async def run() -> list[Answer]:
        opened = [await _open_stream(served.port, TENANTS[i % 2]) for i in range(callers)]
        # Each stream's first event is out: every call is in flight.
        heads = [await reader.readuntil(b"\n\n") for reader, _ in opened]
        os.kill(served.process.pid, signal.SIGTERM)  # gunicorn's graceful shutdown
        answers = []
        for (reader, writer), head, index in zip(opened, heads, range(callers), strict=True):
            answers.append(_answer(TENANTS[index % 2], head + await reader.read()))
            writer.close()
        return answers

    answers = asyncio.run(asyncio.wait_for(run(), PATIENCE_S))
    assert served.process.wait(timeout=PATIENCE_S) == 0

    assert [answer.done for answer in answers] == [True] * callers
    _charged_exactly(before, _spent_and_reserved(served.ledger), answers)
