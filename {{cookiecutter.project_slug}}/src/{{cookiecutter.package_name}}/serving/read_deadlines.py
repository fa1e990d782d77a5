"""How long a client may take to send a request: its head, then its body.

A connection's socket reads (``recv``) keep to the deadline of the part being read, so a
client that drips its head or body, or announces a large chunk and stalls, is cut however
steadily it trickles: a timeout per read would not stop a byte every few seconds. gunicorn
(and its chunked decoding) reads through ``recv`` unchanged; the worker classes
(gthread_worker.py, gevent_worker.py) say when each part starts.

- Before a request's first byte the connection is idle: after ``idle_s`` (gunicorn's
  keep-alive) it is closed without an answer, as gunicorn closes idle connections.
- From the first byte, the head must be complete within ``head_s``: else 408.
- From the end of the head, the body must be complete within ``body_s``: the app's read
  raises :class:`BodyTimeout`, which the app answers as a 408, and the connection closes.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from gunicorn.http.errors import NoMoreData
from werkzeug.exceptions import RequestTimeout

if TYPE_CHECKING:
    _Socket = socket.socket
else:
    _Socket = object


class HeadTimeout(Exception):
    """The head did not arrive in time; the worker answers 408 itself."""


class BodyTimeout(RequestTimeout):
    """Raised in the app's read of the body: the app's error handler answers it (408 JSON)."""


class ReadDeadlines(_Socket):
    """Mixed into a socket class: ``recv`` keeps to the deadline of the request part."""

    _phase: str | None = None  # "head", "body" or None: no deadline
    _idle_until = 0.0
    _head_s = 0.0
    _deadline: float | None = None
    _request: Any = None  # gunicorn's request whose body is read (closed after a timeout)
    expired = False

    @classmethod
    def adopt(cls, sock: socket.socket) -> ReadDeadlines:
        """The same connection (its descriptor and timeout), read with deadlines."""
        timeout = sock.gettimeout()
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.settimeout(timeout)
        return adopted

    def await_head(self, idle_s: float, head_s: float) -> None:
        self._phase, self._request, self._deadline = "head", None, None
        self._idle_until, self._head_s = time.monotonic() + idle_s, head_s

    def await_body(self, body_s: float, request: Any) -> None:
        self._phase, self._request = "body", request
        self._deadline = time.monotonic() + body_s

    def no_deadline(self) -> None:
        self._phase, self._request = None, None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._phase is None:
            return super().recv(bufsize, flags)
        limit = self._idle_until if self._deadline is None else self._deadline
        remaining = limit - time.monotonic()
        if remaining <= 0:
            raise self._expire()
        prior = self.gettimeout()
        self.settimeout(remaining if prior is None else min(prior, remaining))
        try:
            data = super().recv(bufsize, flags)
        except TimeoutError:
            if prior is not None and prior < remaining:
                raise  # the caller's own timeout, not the deadline
            raise self._expire() from None
        finally:
            self.settimeout(prior)
        if data and self._deadline is None:  # the head's first bytes: its clock starts
            self._deadline = time.monotonic() + self._head_s
        return data

    def _expire(self) -> Exception:
        if self._deadline is None:
            idle: Exception = NoMoreData()  # gunicorn closes the connection quietly
            return idle
        self.expired = True
        if self._phase == "head":
            return HeadTimeout(f"the request head took longer than {self._head_s:g} s")
        if self._request is not None:
            self._request.must_close = True  # the answer says Connection: close
        return BodyTimeout("The request body was not received in time.")
