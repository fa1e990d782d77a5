"""The gthread worker, in this process: a connection handed to a thread reads with the
request's deadlines, and a stalled client frees its thread with a 408."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn

from {{ cookiecutter.package_name }}.serving.gthread_worker import DeadlineSocket, ThreadWorker

PATIENCE_S = 60.0  # only stops a hang


class Worker(ThreadWorker):
    header_timeout = 0.2
    body_timeout = 0.2


def echo_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Reads the whole body, as the app does; a BodyTimeout is answered as the app would."""
    try:
        body = environ["wsgi.input"].read()
    except Exception as exc:  # BodyTimeout: an HTTPException the app answers 408
        start_response(f"{exc.code} Request Timeout", [("Content-Type", "application/json")])
        return [json.dumps({"error": "request_timeout", "message": "slow"}).encode()]
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def worker() -> Iterator[Worker]:
    config = Config()
    made = Worker(0, 0, [], None, 30, config, Logger(config))
    made.wsgi = echo_body
    made.tpool = ThreadPoolExecutor(1)
    made.method_queue.init()
    yield made
    made.tpool.shutdown(wait=True)
    made.method_queue.close()
    made.tmp.close()


def serve(worker: Worker, request: bytes) -> tuple[bytes, Future[Any]]:
    """Hands a connection to the worker as its accept() does; the client sends ``request``
    and then nothing more. Returns the answer and the thread's outcome."""
    server_side, client_side = socket.socketpair()
    conn = TConn(worker.cfg, server_side, ("127.0.0.1", 5000), ("127.0.0.1", 8000))
    handled: list[Future[Any]] = []
    submit = worker.tpool.submit

    def submit_and_keep(*args: Any) -> Future[Any]:  # the thread's outcome, for the test
        handled.append(submit(*args))
        return handled[-1]

    worker.tpool.submit = submit_and_keep  # type: ignore[method-assign]
    with client_side:
        client_side.settimeout(PATIENCE_S)
        client_side.sendall(request)
        worker.enqueue_req(conn)
        assert isinstance(conn.sock, DeadlineSocket)
        handled[0].result(timeout=PATIENCE_S)  # the thread is done: all is written
        client_side.setblocking(False)
        answer = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := client_side.recv(65536):
                answer += chunk
    conn.close()
    return answer, handled[0]


def test_a_stalled_head_frees_the_thread_with_408(worker: Worker) -> None:
    answer, handled = serve(worker, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aa")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Content-Type: application/json\r\n" in answer
    assert handled.result() is False, "the connection is not kept"


def test_a_stalled_body_is_answered_by_the_app_and_the_connection_closes(worker: Worker) -> None:
    answer, handled = serve(worker, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Connection: close\r\n" in answer
    assert handled.result() is False


def test_a_request_in_time_is_served_and_kept_alive(worker: Worker) -> None:
    answer, handled = serve(worker, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nab")
    assert handled.result() is True
