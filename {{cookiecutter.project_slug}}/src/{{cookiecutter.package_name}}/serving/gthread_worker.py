"""gunicorn's ``gthread`` worker (a thread per request in flight), answering in JSON and
bounding how long a client may take to send its request (read_deadlines.py).

``GUNICORN_WORKER_CLASS=gthread`` picks it; workers.py gives it its timeouts.
"""

from __future__ import annotations

import socket
from typing import Any

from gunicorn.workers import gthread

from .boot_signals import DeliveredAfterInit
from .json_errors import JsonErrors
from .read_deadlines import ReadDeadlines


class DeadlineSocket(ReadDeadlines, socket.socket):
    """A client connection whose reads keep to the request's deadlines."""


class ThreadWorker(DeliveredAfterInit, JsonErrors, gthread.ThreadWorker):  # type: ignore[misc]
    header_timeout = 10.0
    body_timeout = 30.0

    def enqueue_req(self, conn: Any) -> None:
        # Every connection reaches a thread through here, first from accept(), before
        # anything was read (a TLS connection is wrapped later, in the thread: it is read
        # without deadlines; TLS belongs to the proxy in front, README "In front of gunicorn").
        if not conn.initialized and type(conn.sock) is socket.socket:
            conn.sock = DeadlineSocket.adopt(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        # A thread takes the connection when a request's bytes are there (gunicorn first
        # waits for them, then parks the connection on its poller); what is left of the wait
        # is covered by the idle bound.
        if isinstance(conn.sock, DeadlineSocket):
            idle_s = gthread.DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
            conn.sock.await_head(idle_s, self.header_timeout)
        return super().handle(conn)

    def handle_request(self, req: Any, conn: Any) -> bool:
        if not isinstance(conn.sock, DeadlineSocket):
            return bool(super().handle_request(req, conn))
        conn.sock.await_body(self.body_timeout, req)
        try:
            return bool(super().handle_request(req, conn))
        finally:
            # What gunicorn reads after the answer (the rest of a body the app did not
            # read) it bounds itself, as the wait for the next request.
            conn.sock.no_deadline()
