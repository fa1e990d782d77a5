"""Both worker classes, served by a real gunicorn over real sockets: gunicorn's own errors
are JSON, and clients too slow to send their request are cut while others are served.

Outcomes are counted (statuses, who was answered before whom), never durations.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.callers_kit import dev_auth_headers
from support.gunicorn_kit import PATIENCE_S, Gunicorn, gunicorn, read_answer, split_answer

WORKER_NAMES = {"gevent": "GeventWorker", "gthread": "ThreadWorker"}
WORKER_CLASSES = tuple(WORKER_NAMES)
# A body announced this long is never complete while a test drips it (a byte at a time).
SLOW_BODY_BYTES = 20_000
DRIP_EVERY_S = 0.05  # one byte each time: no single read waits long, the whole does
# The deadlines of the tests that cut slow clients (the defaults are 10 s and 30 s).
SHORT_DEADLINES = {"GUNICORN_HEADER_TIMEOUT": "0.5", "GUNICORN_BODY_TIMEOUT": "0.5"}

HOSTILE = {
    "bad request line": (b"GARBAGE\r\n\r\n", 400),
    "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "too many headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % i for i in range(200))
        + b"\r\n",
        431,
    ),
    "header too large": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"y" * 9000 + b"\r\n\r\n", 431),
    "bad header name": (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n", 400),
    "body of unknown length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    "unknown transfer coding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n",
        501,
    ),
}


def chat_head(length: int | str, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    headers = {**dev_auth_headers("acme"), "Content-Type": "application/json"}
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /chat HTTP/1.1\r\nHost: x\r\n{lines}{framing}\r\n\r\n".encode()


def assert_json_error(answer: bytes, status: int) -> dict[str, object]:
    got, headers, body = split_answer(answer)
    assert got == status, answer[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)
    assert isinstance(error, dict) and set(error) >= {"error", "message"}, error
    assert isinstance(error["error"], str) and isinstance(error["message"], str)
    return error


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """One gunicorn per worker class, with short request deadlines."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    with gunicorn(tmp_path, GUNICORN_WORKER_CLASS=request.param, **SHORT_DEADLINES) as server:
        assert f"Using worker: {WORKER_NAMES[request.param]}" in server.log_text()
        yield server


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_gunicorns_own_errors_are_the_apps_json(served: Gunicorn, case: str) -> None:
    request_bytes, status = HOSTILE[case]
    with served.connect() as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock)
    assert b"<html" not in answer.lower()
    assert_json_error(answer, status)


class Dripper:
    """Sends ``start``, then one byte of ``drip`` at a time, until the server answers."""

    def __init__(self, served: Gunicorn, start: bytes, drip: bytes = b"a") -> None:
        self.sock = served.connect()
        self.sock.sendall(start)
        self.drip = drip
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        while not self.stop.wait(DRIP_EVERY_S):
            try:
                self.sock.sendall(self.drip)
            except OSError:
                return

    def answered(self) -> bool:
        """Whether anything came back yet (an answer, or the connection closed)."""
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) is not None
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)

    def answer(self) -> bytes:
        try:
            return read_answer(self.sock)
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=PATIENCE_S)
        self.sock.close()


def chat(served: Gunicorn) -> int:
    body = json.dumps({"prompt": "Say a few words.", "max_tokens": 8}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{served.port}/chat",
        data=body,
        headers={**dev_auth_headers("acme"), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=PATIENCE_S) as response:
        return int(response.status)


def test_a_client_dripping_its_head_gets_408(served: Gunicorn) -> None:
    dripper = Dripper(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    error = assert_json_error(dripper.answer(), 408)
    assert error["error"] == "request_timeout"
    assert chat(served) == 200, "the worker serves on"


def test_a_client_dripping_its_body_gets_408(served: Gunicorn) -> None:
    dripper = Dripper(served, chat_head(SLOW_BODY_BYTES) + b'{"prompt": "', drip=b"a")
    error = assert_json_error(dripper.answer(), 408)
    assert error["error"] == "request_timeout"
    assert chat(served) == 200


def test_a_huge_chunk_that_never_comes_gets_408(served: Gunicorn) -> None:
    with served.connect() as sock:
        sock.sendall(chat_head(0, chunked=True) + b"7fffffff\r\n" + b'{"prompt": "')
        answer = read_answer(sock)  # the client sends nothing more
    assert_json_error(answer, 408)


def test_dripping_clients_are_cut_and_everyone_else_is_served(served: Gunicorn) -> None:
    """40 slow clients (heads and bodies) and 20 callers: every caller is answered, every
    slow client gets its 408."""
    drippers = [
        Dripper(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        if n % 2
        else Dripper(served, chat_head(SLOW_BODY_BYTES) + b'{"prompt": "')
        for n in range(40)
    ]
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: chat(served), range(20)))
    answers = [dripper.answer() for dripper in drippers]
    assert statuses == [200] * 20
    assert [split_answer(answer)[0] for answer in answers] == [408] * 40


def test_slow_clients_do_not_starve_a_gevent_worker(tmp_path: Path) -> None:
    """A slow connection costs a greenlet: with deadlines far away, 40 clients sending their
    body slowly hold one worker, and every other caller is answered while they all wait
    (under gthread they would hold its 8 threads)."""
    with gunicorn(tmp_path, GUNICORN_WORKER_CLASS="gevent", GUNICORN_BODY_TIMEOUT="600") as server:
        drippers = [
            Dripper(server, chat_head(SLOW_BODY_BYTES) + b'{"prompt": "') for _ in range(40)
        ]
        try:
            with ThreadPoolExecutor(20) as pool:
                statuses = list(pool.map(lambda _: chat(server), range(20)))
            waiting = [not dripper.answered() for dripper in drippers]
        finally:
            for dripper in drippers:
                dripper.close()
    assert statuses == [200] * 20
    assert waiting == [True] * 40, "the slow clients were still being read"
