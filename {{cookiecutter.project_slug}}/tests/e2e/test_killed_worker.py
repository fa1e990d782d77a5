"""A worker killed mid-stream (``kill -9``): the app that starts next charges what it sent.

The worker is a real process serving real streams; the test reads part of each, kills the
worker, starts a new app on the same instance folder and looks at the ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from flask import Flask

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.service import budget_service
from localcycles import LocalCyclesServer

PROJECT = Path(__file__).resolve().parents[2]
STREAMS = 4
MAX_TOKENS = 200
DELTAS_READ = 20  # each stream is killed after at least this many deltas reached its client
INPUT_TOKENS = 10  # what the worker's provider reports
PROMPT = "Go on for a while."
PATIENCE_S = 60.0

WORKER = """
import sys, time
from pathlib import Path
from werkzeug.serving import make_server
from conftest import app_env
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider

class Endless(FakeProvider):
    # One token ("tok ") every 10 ms, up to max_tokens: it is still streaming when killed.
    def stream(self, *, prompt, max_tokens, progress, system=None):
        progress.input_tokens = 10  # INPUT_TOKENS
        progress.model = self.model
        for n in range(max_tokens):
            time.sleep(0.01)
            progress.add_text("tok ")
            progress.output_tokens = n + 1
            yield "tok "

app = create_app(app_env(sys.argv[1], Path(sys.argv[2])))
app.extensions["llm"] = Endless("fake-model")
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.fixture
def worker(cycles_server: LocalCyclesServer, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), str(PROJECT / "tests")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, cycles_server.base_url, str(tmp_path)],
        env=env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=PATIENCE_S)
    assert process.stdout is not None
    process.stdout.close()


def port_of(process: subprocess.Popen[str]) -> int:
    """The port the worker prints once it serves (waited for, within PATIENCE_S)."""
    found: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(PATIENCE_S)
    assert found and found[0].strip().isdigit(), f"the worker did not start: {found}"
    return int(found[0])


def read_deltas(lines: Iterator[str], count: int) -> int:
    """Read the stream until ``count`` delta events arrived; how many did."""
    received = 0
    for line in lines:
        if line.startswith("event: delta"):
            received += 1
            if received == count:
                return received
    raise AssertionError(f"the stream ended after {received} deltas")


@pytest.mark.parametrize("hold_lapsed", [False, True], ids=["hold live", "hold lapsed"])
def test_streams_of_a_killed_worker_are_charged_at_least_what_they_sent(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    worker: subprocess.Popen[str],
    make_app: Callable[..., Flask],
    hold_lapsed: bool,
) -> None:
    base_url = f"http://127.0.0.1:{port_of(worker)}"
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}
    received, readers = [], []
    with ExitStack() as streams, httpx.Client(timeout=PATIENCE_S) as http:
        for _ in range(STREAMS):
            response = streams.enter_context(
                http.stream("POST", f"{base_url}/chat", json=body, headers=auth_headers("acme"))
            )
            assert response.status_code == 200
            # Kept: a reader that is let go closes its connection, which ends the stream.
            readers.append(response.iter_lines())
            received.append(read_deltas(readers[-1], DELTAS_READ))
        os.kill(worker.pid, signal.SIGKILL)  # four streams in flight
        assert worker.wait(timeout=PATIENCE_S) == -signal.SIGKILL
    # Nothing was charged: the holds are all still there.
    assert provisioner.balance("acme")["reserved"] == STREAMS * estimate()
    if hold_lapsed:
        cycles_server.ledger.clock = _later(cycles_server.ledger.clock)

    restarted = make_app(cycles_server.base_url)  # same instance folder (tmp_path)
    settler = budget_service(restarted).settler
    settler.background = False  # the test makes the settler's first pass itself
    settler.run_due()

    balance = provisioner.balance("acme")
    sent = sum(pricing.cost(INPUT_TOKENS, tokens) for tokens in received)
    assert sent <= balance["spent"] + balance["debt"] <= STREAMS * estimate()
    assert balance["reserved"] == 0
    statuses = provisioner.reservation_statuses("acme")
    assert statuses == ["EXPIRED" if hold_lapsed else "COMMITTED"] * STREAMS
    assert settler.store.charges() == []


def estimate() -> int:
    return pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)


def _later(clock: Callable[[], int]) -> Callable[[], int]:
    """``clock``, past the TTL and grace period of every hold made until now."""
    return lambda: clock() + 60_000 + 5_000 + 1
