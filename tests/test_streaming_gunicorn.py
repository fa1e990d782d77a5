"""Streaming under gunicorn's workers: events relayed, a hang-up charged, no hold left.

The generated suite streams through Werkzeug's server; production runs gunicorn, whose
workers write and close the response differently, so this runs the real thing: each test
under both worker classes the bake offers (``GUNICORN_WORKER_CLASS``: gevent, the
default, and gthread), with the bake's own gunicorn.conf.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.baking import Baker, fresh_copy
from support.localhttp import free_port, stop_group, wait_for, wait_until_serving
from support.localhttp import http as json_request

pytestmark = pytest.mark.slow

PACKAGE = "llm_service"
AUTH = {"Authorization": "Bearer dev-key-acme"}
PROMPT = "Stream a few words about careful spending on language model calls, please."
PATIENCE_S = 60.0

# gunicorn serves this module: the development app, with the fake model slowed to one
# delta per 50 ms so that a client can hang up in the middle of an answer.
SLOW_APP = f"""
from {PACKAGE} import create_app
from {PACKAGE}.llm import FakeProvider

app = create_app()
app.extensions["llm"] = FakeProvider(
    app.extensions["settings"].llm_model, delta_delay_s=0.05
)
"""


WORKER_CLASSES = ("gevent", "gthread")
WORKER_NAMES = {"gevent": "gevent", "gthread": "thread"}


@contextmanager
def gunicorn(
    project: Path,
    tmp_path: Path,
    app: str,
    worker_class: str,
    threads: int = 4,
    **settings: str,
) -> Iterator[str]:
    """gunicorn serving ``app`` (module:variable) from ``project`` with its gunicorn.conf.py
    (read from the working directory), one worker of ``worker_class``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "FLASK_"))}
    env.update(
        PYTHONPATH=f"{project / 'src'}{os.pathsep}{project}",
        APP_ENV="development",
        LLM_PROVIDER="fake",
        CYCLES_LOCAL_DB=str(tmp_path / "ledger.sqlite3"),
        CYCLES_JOURNAL_DIR=str(tmp_path / "journal"),
        GUNICORN_WORKER_CLASS=worker_class,
        GUNICORN_THREADS=str(threads),  # gthread only
        **settings,
    )
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             app],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, server, log_path, PATIENCE_S)
            (using,) = [x for x in log_path.read_text().splitlines() if "Using worker:" in x]
            # The production class was used (serving/ names gthread's ThreadWorker).
            assert WORKER_NAMES[worker_class] in using.lower(), using
            yield base
        finally:
            stop_group(server)


@pytest.fixture(params=WORKER_CLASSES)
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gunicorn_app(bake: Baker, tmp_path: Path, worker_class: str) -> Iterator[str]:
    project = fresh_copy(bake(), tmp_path)
    (project / "slow_stream_app.py").write_text(SLOW_APP)
    with gunicorn(project, tmp_path, "slow_stream_app:app", worker_class) as base:
        yield base


def open_stream(base: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE_S)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 64, "stream": True})
    connection.request(
        "POST", "/chat", body=body, headers={"Content-Type": "application/json", **AUTH}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    return connection, response


def data_events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    for line in response:
        if line.startswith(b"data: "):
            yield json.loads(line[len(b"data: ") :])


def balance(base: str) -> dict[str, int]:
    status, body = json_request("GET", base + "/budget", headers=AUTH)
    assert status == 200, body
    (row,) = body["balances"]
    return row  # type: ignore[no-any-return]


def settled_balance(base: str) -> dict[str, int]:
    """The balance once nothing is held (a stream settles after its last byte is sent)."""
    deadline = time.monotonic() + PATIENCE_S
    while (row := balance(base))["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return row


def test_gunicorn_streams_every_event_and_charges_a_hang_up_for_what_it_got(
    gunicorn_app: str,
) -> None:
    before = balance(gunicorn_app)["spent"]
    connection, response = open_stream(gunicorn_app)
    events = list(data_events(response))
    connection.close()
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"} and len(kinds) > 5
    full_cost = events[-1]["cost_usd_microcents"]
    after_full = settled_balance(gunicorn_app)
    assert after_full["spent"] - before == full_cost
    assert after_full["reserved"] == 0

    # Hang up after the first delta: charged for what was generated, never left holding.
    connection, response = open_stream(gunicorn_app)
    first = next(data_events(response))
    assert first["type"] == "delta"
    response.close()
    connection.close()
    after_hang_up = settled_balance(gunicorn_app)
    assert after_hang_up["reserved"] == 0
    charged = after_hang_up["spent"] - after_full["spent"]
    assert 0 < charged < full_cost


# A provider that streams far more than the socket buffers between gunicorn and a client
# hold: 32 KiB deltas, one output token per 8 bytes, up to max_tokens.
FIREHOSE_APP = f"""
from {PACKAGE} import create_app
from {PACKAGE}.llm import FakeProvider


class Firehose(FakeProvider):
    def stream(self, *, prompt, max_tokens, progress, system=None):
        progress.input_tokens, progress.model = 20, self.model
        produced = 0
        while produced < max_tokens:
            tokens = min(4096, max_tokens - produced)
            text = "x" * (tokens * 8)
            progress.add_text(text)
            produced += tokens
            progress.output_tokens = produced
            yield text
        progress.usage_final = True


app = create_app()
app.extensions["llm"] = Firehose(app.extensions["settings"].llm_model)
"""
FIREHOSE_TOKENS = 500_000


def test_gunicorn_cuts_off_a_client_that_stops_reading_and_charges_what_it_produced(
    bake: Baker, tmp_path: Path, worker_class: str
) -> None:
    project = fresh_copy(bake(), tmp_path)
    (project / "firehose_app.py").write_text(FIREHOSE_APP)
    settings = {"STREAM_WRITE_TIMEOUT": "1", "MAX_TOKENS_LIMIT": str(FIREHOSE_TOKENS)}
    # gthread, one thread: while the stream's write is blocked nothing else is served, so
    # the balance below is read only once that write has failed and freed the thread.
    # gevent serves the balance meanwhile: the wait below is for the charge to land.
    app = "firehose_app:app"
    with gunicorn(project, tmp_path, app, worker_class, threads=1, **settings) as base:
        before = balance(base)
        port = int(base.rsplit(":", 1)[1])
        client = socket.socket()
        # Before connect, so the window the client advertises stays this small.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(PATIENCE_S)
        client.connect(("127.0.0.1", port))
        body = json.dumps({"prompt": PROMPT, "max_tokens": FIREHOSE_TOKENS, "stream": True})
        head = (
            f"POST /chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        client.sendall(head.encode() + body.encode())
        # The client reads nothing until its stream has been settled without it.

        def charged() -> bool:
            return balance(base)["spent"] != before["spent"]

        wait_for(charged, PATIENCE_S, "the stalled stream to be settled")
        after = settled_balance(base)
        # The worker's blocked write failed: the client gets what was on its way, then the
        # end of the connection (not the rest of the answer, nor a "done" event).
        received = bytearray()
        while chunk := client.recv(1 << 16):
            received += chunk
        client.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert b'"type":"delta"' in received and b'"type":"done"' not in received
    assert len(received) < FIREHOSE_TOKENS * 8
    assert after["reserved"] == 0
    charged = after["spent"] - before["spent"]
    log = (tmp_path / "gunicorn.log").read_text()
    (estimate,) = re.findall(r"POST /chat 200 .* estimate=(\d+)", log)
    assert 0 < charged < int(estimate)
    assert "its client stopped reading" in log
    assert "Traceback" not in log  # a cut connection is a client gone, not a server error
