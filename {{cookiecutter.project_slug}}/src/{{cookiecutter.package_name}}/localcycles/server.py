"""The HTTP/1.1 transport: a threaded stdlib socket server with keep-alive.

``http.server.BaseHTTPRequestHandler`` parses headers with the email package and writes
headers and body in separate sends; both cost more than the ledger work on this hot path, so
this handler parses the small subset of HTTP/1.1 that API clients use and answers with one
``send`` per response. Bodies are bounded by Content-Length before anything is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import socket
import socketserver
import threading
import time
from types import TracebackType
from typing import Any

from .errors import CyclesError
from .ledger import Clock, LocalLedger
from .routes import Api, Request, split_target

log = logging.getLogger(__name__.rsplit(".", 1)[0])

MAX_BODY = 1024 * 1024
MAX_LINE = 8192
MAX_HEADERS = 100
IDLE_TIMEOUT_S = 120.0

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Request and trace ids only need to be unique, not secret: a Mersenne Twister seeded from
# os.urandom costs no system call per request (each one would also release the GIL and then
# queue for it again behind the other connection threads).
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat ids
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _trace_id(headers: dict[str, str]) -> str:
    """W3C traceparent first, then X-Cycles-Trace-Id, else a fresh id (never all zeros)."""
    match = _TRACEPARENT.match(headers.get("traceparent", ""))
    if match and match.group(1).strip("0") and match.group(2).strip("0"):
        return match.group(1)
    given = headers.get("x-cycles-trace-id", "")
    if _TRACE_ID.match(given) and given.strip("0"):
        return given
    while True:
        fresh = _ids.getrandbits(128)
        if fresh:
            return f"{fresh:032x}"


class _Close(Exception):
    """Answer with this error and drop the connection (the stream is no longer in sync)."""

    def __init__(self, error: CyclesError) -> None:
        super().__init__(error.message)
        self.error = error


class _Handler(socketserver.StreamRequestHandler):
    server: _ThreadingServer
    timeout = IDLE_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (OSError, TimeoutError):
            return

    def _one(self) -> bool:
        """Serve one request; return whether the connection stays open."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        started = time.perf_counter()
        request_id = f"req_{_ids.getrandbits(96):024x}"
        headers: dict[str, str] = {}
        method = target = "-"
        keep_alive = False
        try:
            if len(line) > MAX_LINE:
                raise _Close(CyclesError(414, "INVALID_REQUEST", "Request line too long"))
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise _Close(CyclesError(400, "INVALID_REQUEST", "Malformed request line"))
            method, target, version = parts
            self._read_headers(headers)
            connection = headers.get("connection", "").lower()
            keep_alive = (version == "HTTP/1.1" and "close" not in connection) or (
                version == "HTTP/1.0" and "keep-alive" in connection
            )
            body = self._read_body(headers)
            path, query = split_target(target)
            response = self.server.api.dispatch(Request(method, path, query, headers, body))
            status, payload, extra = response.status, response.body, response.headers
        except _Close as exc:
            keep_alive = False
            status, payload, extra = self._error(exc.error, request_id, headers)
        except CyclesError as exc:
            status, payload, extra = self._error(exc, request_id, headers)
        except Exception:
            log.exception("localcycles: unhandled error on %s %s", method, target)
            status, payload, extra = self._error(
                CyclesError(500, "INTERNAL_ERROR", "Internal error"), request_id, headers
            )
        self._send(status, payload, extra, request_id, headers, keep_alive)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d in %.2f ms",
                method,
                target,
                status,
                (time.perf_counter() - started) * 1000,
            )
        return keep_alive

    def _read_headers(self, headers: dict[str, str]) -> None:
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                raise _Close(CyclesError(431, "INVALID_REQUEST", "Header line too long"))
            if raw in (b"\r\n", b"\n", b""):
                return
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _Close(CyclesError(400, "INVALID_REQUEST", "Malformed header line"))
            headers[name.strip().lower()] = value.strip()
        raise _Close(CyclesError(431, "INVALID_REQUEST", "Too many headers"))

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "transfer-encoding" in headers:
            raise _Close(
                CyclesError(
                    411, "INVALID_REQUEST", "Chunked bodies are not supported; send Content-Length"
                )
            )
        raw = headers.get("content-length")
        if raw is None:
            return b""
        if not raw.isdigit():
            raise _Close(CyclesError(400, "INVALID_REQUEST", "Invalid Content-Length"))
        length = int(raw)
        if length > MAX_BODY:
            # Refuse before reading; the unread body makes the connection unusable.
            raise _Close(
                CyclesError(413, "INVALID_REQUEST", f"Request body exceeds {MAX_BODY} bytes")
            )
        if length and headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise _Close(CyclesError(400, "INVALID_REQUEST", "Truncated request body"))
        return body

    @staticmethod
    def _error(
        error: CyclesError, request_id: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        body: dict[str, Any] = {
            "error": error.code,
            "message": error.message,
            "request_id": request_id,
            "trace_id": _trace_id(headers),
        }
        if error.details:
            body["details"] = error.details
        return error.status, body, error.headers

    def _send(
        self,
        status: int,
        payload: dict[str, Any],
        extra: dict[str, str],
        request_id: str,
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        data = _json_bytes(payload)
        trace = payload.get("trace_id") if status >= 400 else _trace_id(headers)
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            f"X-Request-Id: {request_id}",
            f"X-Cycles-Trace-Id: {trace}",
        ]
        lines.extend(f"{name}: {value}" for name, value in extra.items())
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + data)


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return _encode(payload).encode("utf-8")


class _ThreadingServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_guard = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket, opened: bool) -> None:
        with self._open_guard:
            if opened:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_connections(self) -> None:
        """Wake keep-alive threads blocked in recv so stop() leaves nothing serving."""
        with self._open_guard:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class LocalCyclesServer:
    """A Cycles-protocol server on a local SQLite ledger.

    ``start()`` serves from a daemon thread and returns ``self``; ``base_url`` is then set.
    ``port=0`` picks a free ephemeral port. ``admin_key`` enables the /v1/admin API.
    """

    def __init__(
        self,
        db_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_key: str | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.ledger = LocalLedger(db_path, clock=clock)
        self.host = host
        self.port = port
        self.admin_key = admin_key
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Event | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("server is not started")
        return f"http://{self.host}:{self.port}"

    def bind(self) -> LocalCyclesServer:
        """Open the listening socket (resolves port 0) without serving yet."""
        if self._server is None:
            self._server = _ThreadingServer(
                (self.host, self.port), Api(self.ledger, self.admin_key)
            )
            self.port = int(self._server.server_address[1])
        return self

    def start(self) -> LocalCyclesServer:
        self.bind()
        assert self._server is not None
        if self._checkpointer is None:
            self._checkpointer = self.ledger.db.start_checkpointer()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"localcycles:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until ``stop()`` (from another thread or a signal)."""
        self.bind()
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        server.server_close()
        server.close_connections()
        if self._checkpointer is not None:
            self.ledger.db.stop_checkpointer(self._checkpointer)
            self._checkpointer = None

    def __enter__(self) -> LocalCyclesServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
