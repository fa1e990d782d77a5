"""Server-sent events: how a streamed answer is framed on the wire, and how its connection
is cut when the client stops reading."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Response

MIMETYPE = "text/event-stream"


def event(name: str, data: dict[str, Any]) -> bytes:
    """One event; the JSON data also names its type, for clients that read data only."""
    payload = json.dumps({"type": name, **data}, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode()


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
        # socket.socket's own shutdown, also for a TLS socket: a shutdown(2) of the
        # descriptor, without touching the TLS state another thread is writing with.
        # A socket already closed has nothing left to cut.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    return cut
