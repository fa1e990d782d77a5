"""What serving/ relies on in gunicorn beyond its public API: when an upgrade changes any of
it, this says where to look (pyproject.toml pins the versions it was checked with).

- json_errors.py overrides ``Worker.handle_error``, the one place gunicorn writes its own
  answers, and reads what it writes through ``util.write_error``.
- gthread_worker.py and gevent_worker.py override how a connection reaches a request
  (``enqueue_req``, ``handle``, ``handle_request``, ``timeout_ctx``) and swap the client
  socket for one whose ``recv`` keeps to deadlines: gunicorn's parser must read through
  ``recv`` of the socket it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gunicorn
import pytest
from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import base, base_async, ggevent, gthread

TESTED_MAJOR = 27


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_gunicorn_is_the_major_version_serving_was_checked_with() -> None:
    assert int(gunicorn.__version__.split(".")[0]) == TESTED_MAJOR, (
        "a new gunicorn: re-check json_errors.py, read_deadlines.py and the worker classes"
    )


@pytest.mark.parametrize(
    ("hook", "names"),
    [
        (base.Worker.handle_error, ["self", "req", "client", "addr", "exc"]),
        (gthread.ThreadWorker.enqueue_req, ["self", "conn"]),
        (gthread.ThreadWorker.handle, ["self", "conn"]),
        (gthread.ThreadWorker.handle_request, ["self", "req", "conn"]),
        (ggevent.GeventWorker.timeout_ctx, ["self"]),
        (ggevent.GeventWorker.handle, ["self", "listener", "client", "addr"]),
        (ggevent.GeventWorker.handle_request, ["self", "listener_name", "req", "sock", "addr"]),
        (util.write_error, ["sock", "status_int", "reason", "mesg"]),
        (util.write_nonblock, ["sock", "data", "chunked"]),
        (util.close_graceful, ["sock", "timeout", "max_drain"]),
    ],
    ids=lambda hook: getattr(hook, "__qualname__", ""),
)
def test_the_hooks_serving_overrides_or_calls_keep_their_signature(
    hook: Callable[..., Any], names: list[str]
) -> None:
    assert parameters(hook) == names


def test_gunicorn_writes_its_own_answers_only_in_handle_error() -> None:
    """If a new place wrote an answer itself, it would not be JSON."""
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(
        base.Worker.handle_error
    )
    for module in (gthread, base_async):
        assert "write_error" not in inspect.getsource(module)


def test_the_parser_reads_through_the_sockets_recv() -> None:
    assert "self.sock.recv(" in inspect.getsource(SocketUnreader.chunk)


def test_the_gevent_worker_bounds_request_heads_with_timeout_ctx() -> None:
    """gevent_worker.py keeps that bound behind the socket's deadlines."""
    assert "with self.timeout_ctx():" in inspect.getsource(base_async.AsyncWorker.handle)


def test_a_gthread_connection_says_whether_it_was_read_from() -> None:
    """gthread_worker.py swaps the socket of a connection not read from yet."""
    assert "self.initialized = False" in inspect.getsource(gthread.TConn.__init__)
    assert "self.sock = sock.ssl_wrap_socket(self.sock" in inspect.getsource(gthread.TConn.init)


def test_a_gthread_connection_waits_for_data_before_taking_a_thread() -> None:
    """gthread_worker.py adds this wait to a head's idle time."""
    assert isinstance(gthread.DEFAULT_WORKER_DATA_TIMEOUT, float)
    assert "wait_for_data(DEFAULT_WORKER_DATA_TIMEOUT)" in inspect.getsource(
        gthread.ThreadWorker.handle
    )
