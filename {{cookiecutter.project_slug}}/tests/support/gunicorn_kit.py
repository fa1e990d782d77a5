"""The production server, started for a test: ``gunicorn -c gunicorn.conf.py``, the app in
development (embedded ledger, fake model), one worker, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
PATIENCE_S = 120.0  # only stops a hang: no test asserts how fast anything is
# What the conf file and the app read: none may leak in from the developer's shell.
READ_PREFIXES = ("APP_", "CYCLES_", "LLM_", "TENANT", "GUNICORN_", "FLASK_", "MAX_", "DEFAULT_")


@dataclass(frozen=True)
class Gunicorn:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE_S)
        return sock

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serving_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(READ_PREFIXES)
        and not name.endswith("_API_KEY")
        and name not in ("WEB_CONCURRENCY", "PORT", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        PYTHONPATH=str(PROJECT / "src"),
        APP_ENV="development",
        FLASK_SKIP_DOTENV="1",
        LLM_PROVIDER="fake",
        CYCLES_LOCAL_DB=str(tmp_path / "ledger.sqlite3"),
        CYCLES_JOURNAL_DIR=str(tmp_path / "journal"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        WEB_CONCURRENCY="1",
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def gunicorn(tmp_path: Path, app: str | None = None, **settings: str) -> Iterator[Gunicorn]:
    """gunicorn serving the app with ``settings`` over the development ones, until the end.

    ``app``: another WSGI app than the conf file's (``module:name``, found in ``tmp_path``).
    """
    # The listening socket is made here and handed over (gunicorn's fd:// bind): a port
    # only picked here could be taken by another test's server before gunicorn binds it,
    # and that server would then answer the readiness poll instead.
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
    port = listener.getsockname()[1]
    env = serving_env(tmp_path, PORT=str(port), **settings)
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", str(PROJECT / "gunicorn.conf.py")]
    command += ["--bind", f"fd://{listener.fileno()}"]
    with listener, log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *([app] if app else [])],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(listener.fileno(),),
        )
    served = Gunicorn(port, process, log)
    try:
        wait_until_serving(served)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=PATIENCE_S)


def wait_until_serving(served: Gunicorn) -> None:
    deadline = time.monotonic() + PATIENCE_S
    url = f"http://127.0.0.1:{served.port}/healthz"
    while True:
        assert served.process.poll() is None, served.log_text()
        try:
            with urllib.request.urlopen(url, timeout=PATIENCE_S):
                return
        except OSError:
            assert time.monotonic() < deadline, served.log_text()
            time.sleep(0.1)


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def split_answer(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers with lower-case names, body)`` of one HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body
