"""Server-sent events: how a streamed answer is framed on the wire, and how its connection
is cut when the client stops reading."""

from __future__ import annotations

import _socket
import contextlib
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Response

MIMETYPE = "text/event-stream"


# One encoder for every event: json.dumps builds a new one per call when given separators.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_DELTA_HEAD = b'event: delta\ndata: {"type":"delta","text":'


def event(name: str, data: dict[str, Any]) -> bytes:
    """One event; the JSON data also names its type, for clients that read data only."""
    payload = _encode({"type": name, **data})
    return f"event: {name}\ndata: {payload}\n\n".encode()


def delta(text: str) -> bytes:
    """``event("delta", {"text": text})`` byte for byte, without building it per event: a
    stream sends one of these per text delta, and nothing else that often."""
    return _DELTA_HEAD + _encode(text).encode() + b"}\n\n"


def response(events: Iterable[bytes]) -> Response:
    return Response(
        events,
        mimetype=MIMETYPE,
        headers={
            "Cache-Control": "no-cache",
            # Proxies such as nginx buffer responses unless told not to.
            "X-Accel-Buffering": "no",
        },
    )


def connection_cutter(environ: Mapping[str, Any]) -> Callable[[], None] | None:
    """A way to end this request's connection from another thread, or None.

    A server writing to a client that stopped reading blocks in ``send`` until the client
    reads again, and the stream's own code does not run meanwhile. Shutting the socket
    down makes that write fail at once (EPIPE), after which the server closes the stream as
    for a client that hung up. gunicorn and Werkzeug's development server hand the socket
    over in the WSGI environ; other servers get None (their own timeouts apply). HTTP/2
    multiplexes many requests on one connection, so only an HTTP/1 connection is cut.
    """
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    protocol = str(environ.get("SERVER_PROTOCOL", ""))
    if not isinstance(sock, socket.socket) or not protocol.startswith("HTTP/1"):
        return None

    def cut() -> None:
        # A shutdown(2) of the descriptor, through a bare socket object on it: also for a
        # TLS socket, without touching the TLS state another thread is writing with, and
        # under gevent without its socket's shutdown, which fails the blocked write with
        # EBADF (logged by gunicorn as a server error) instead of the EPIPE of a client
        # gone. A socket already closed has nothing left to cut.
        with contextlib.suppress(OSError, ValueError):
            bare = _socket.socket(fileno=sock.fileno())
            try:
                bare.shutdown(socket.SHUT_RDWR)
            finally:
                bare.detach()  # the descriptor stays the server's to close

    return cut
