"""gunicorn's ``gevent`` worker (a greenlet per connection), answering in JSON and bounding
how long a client may take to send its request (read_deadlines.py).

The default worker class: an LLM call spends seconds waiting, and a greenlet waiting costs
little, so one worker holds many calls at once (``GUNICORN_WORKER_CONNECTIONS``). gunicorn
patches the standard library (``gevent.monkey.patch_all``) when a worker starts, before it
imports the app; gunicorn.conf.py keeps the app out of the master.
"""

from __future__ import annotations

from typing import Any

import gevent
from gevent import socket as gevent_socket
from gunicorn import util
from gunicorn.workers import ggevent

from .boot_signals import DeliveredAfterInit
from .json_errors import JsonErrors
from .read_deadlines import ReadDeadlines


class DeadlineSocket(ReadDeadlines, gevent_socket.socket):  # type: ignore[misc]
    """A client connection whose reads keep to the request's deadlines."""


class GeventWorker(DeliveredAfterInit, JsonErrors, ggevent.GeventWorker):  # type: ignore[misc]
    header_timeout = 10.0
    body_timeout = 30.0

    def timeout_ctx(self) -> Any:
        # gunicorn bounds the wait for each request head by its keep-alive time, silently.
        # The socket's deadlines bound it (idle: keep-alive; then the head) and answer a slow
        # head with 408 first: this stays a backstop, for a TLS connection.
        return gevent.Timeout(self.cfg.keepalive + self.header_timeout + 1, False)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        # A TLS connection (gunicorn's certfile) is read without deadlines: TLS belongs to
        # the proxy in front (README "In front of gunicorn").
        if type(client) is gevent_socket.socket:
            client = DeadlineSocket.adopt(client)
            client.await_head(self.cfg.keepalive, self.header_timeout)
        super().handle(listener, client, addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        if not isinstance(sock, DeadlineSocket):
            return bool(super().handle_request(listener_name, req, sock, addr))
        sock.await_body(self.body_timeout, req)
        try:
            served = bool(super().handle_request(listener_name, req, sock, addr))
        except StopIteration:  # the answer closes the connection
            if sock.expired:
                # The client is still sending its body: close reading what it sends, or
                # the unread bytes reset the connection and it may lose the 408.
                sock.no_deadline()
                util.close_graceful(sock)
            raise
        # The next request on this connection (after the rest of this body, if the app
        # left some unread) is awaited like the first.
        sock.await_head(self.cfg.keepalive, self.header_timeout)
        return served
