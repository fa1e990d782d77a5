"""How the app's Cycles calls travel: each one kept to a total deadline and a size cap.

Connect and read timeouts bound each socket operation, not a call: a server that sends one
byte every half second under a one-second read timeout is never cut off, and a 500 MB
answer is read whole. The reservation TTL rule (config.minimum_reservation_ttl_ms) assumes
every Cycles call ends within ``cycles_call_budget_ms`` (connect + read timeouts + fixed
phases), so every call is held to exactly that: each connect, write and read waits at most
what is left of the call's deadline, and an answer larger than :data:`MAX_ANSWER_BYTES`
(head and body) is abandoned. Either ends the call as a transport failure (an httpx
timeout or read error), which runcycles and the guard already treat as "Cycles gave no
answer".

Two transports carry the calls (runcycles_compat.py decides which and installs it):

* :class:`PlainHttp` for ``http://`` servers: http.client with kept-alive connections;
* runcycles' own httpx client for ``https://`` (and behind a proxy), whose network streams
  are wrapped by :func:`bound_httpx` so the same limits apply under TLS.

The limits of the call in progress live in a context variable: both transports read and
write on the calling thread, so each socket operation finds its own call's deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpcore
import httpx

# Cycles answers are a few kilobytes (a reservation with its balances, a page of a list);
# anything past this is a fault, and reading it whole would cost the worker its memory.
MAX_ANSWER_BYTES = 1_048_576

# Connections per client (one per API key), all kept alive: a call beyond them waits for
# one to come back (within its deadline) rather than open, then close, a connection of
# its own. Under gevent a worker has hundreds of requests in flight; a connection opened
# and closed per call costs more CPU than the call (and a Cycles server a socket each).
MAX_CONNECTIONS = 64


class AnswerTooLarge(Exception):
    """The server sent more than :data:`MAX_ANSWER_BYTES` for one answer."""


@dataclass
class CallLimits:
    """One call's deadline (monotonic clock), read timeout and answer budget."""

    deadline: float
    read_timeout: float
    max_bytes: int
    received: int = 0

    def timeout(self, wanted: float | None) -> float:
        """``wanted`` (one operation's own timeout), cut to what is left of the call."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the Cycles call ran past its deadline")
        return left if wanted is None else min(wanted, left)

    def count(self, size: int) -> None:
        self.received += size
        if self.received > self.max_bytes:
            raise AnswerTooLarge(f"Cycles answered more than {self.max_bytes} bytes")


_LIMITS: ContextVar[CallLimits | None] = ContextVar("cycles_call_limits", default=None)


@contextlib.contextmanager
def limited(total_s: float, read_timeout: float, max_bytes: int) -> Iterator[CallLimits]:
    """Every socket operation of the calling thread, meanwhile, keeps to these limits."""
    limits = CallLimits(time.monotonic() + total_s, read_timeout, max_bytes)
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


def _current() -> CallLimits:
    limits = _LIMITS.get()
    if limits is None:  # a transport here is only ever used inside limited()
        raise RuntimeError("a bounded Cycles transport was used outside limited()")
    return limits


# --- plain HTTP --------------------------------------------------------------------------


class PlainHttp:
    """What runcycles' CyclesClient asks of its httpx.Client (``post``, ``get``, ``close``),
    over http.client, with a pool of at most ``max_connections`` kept-alive connections
    shared by all threads (a connection goes back to the pool after each answer, so threads
    that come and go, as under ``flask run``, leave nothing open behind them)."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        total_s: float,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        url = urlsplit(base_url)
        self._base_url = base_url.rstrip("/")
        self._host = url.hostname or "localhost"
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        self._headers = {**headers, "Accept": "application/json"}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_s = total_s
        self._max_answer_bytes = max_answer_bytes
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue(max_connections)
        # A slot per connection that may be open: taken for the whole of a call.
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closed = False

    def post(
        self, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = _dumps(json)
        extra = {"Content-Type": "application/json", **(headers or {})}
        return self._send("POST", path, body, extra)

    def get(self, path: str, *, params: dict[str, str] | None = None) -> httpx.Response:
        return self._send("GET", path + ("?" + urlencode(params) if params else ""), None, {})

    def close(self) -> None:
        self._closed = True
        self._drain()

    def idle_connections(self) -> int:
        return self._idle.qsize()

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = httpx.Request(method, self._base_url + path)
        all_headers = {**self._headers, **headers}
        with limited(self._total_s, self._read_timeout, self._max_answer_bytes) as limits:
            if not self._slots.acquire(timeout=limits.timeout(None)):
                # Never sent: every connection stayed busy for the whole call deadline.
                raise httpx.ConnectTimeout("no free connection to Cycles", request=request)
            try:
                return self._exchange(method, path, body, all_headers, request, limits)
            finally:
                self._slots.release()

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        all_headers: dict[str, str],
        request: httpx.Request,
        limits: CallLimits,
    ) -> httpx.Response:
        for attempt in (1, 2):
            try:
                connection, reused = self._checkout(request)
            except httpx.TransportError as exc:
                if attempt == 1:
                    raise
                # The first attempt may have reached the server: not "never sent".
                raise httpx.ReadError(str(exc), request=request) from exc
            try:
                connection.request(method, self._prefix + path, body, all_headers)
                answer = connection.getresponse()
                if (answer.length or 0) > limits.max_bytes:
                    raise AnswerTooLarge(f"Cycles announced {answer.length} bytes")
                content = answer.read()
            except TimeoutError as exc:
                connection.close()
                raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
            except AnswerTooLarge as exc:
                connection.close()
                raise httpx.ReadError(str(exc), request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                # Kept-alive connections the server has closed fail on first use: drop
                # them all and send once more on a new one. Every Cycles POST carries an
                # idempotency key, so sending it again is safe.
                if reused and attempt == 1:
                    self._drain()
                    continue
                # Connected, so the server may have acted on the request: not a
                # ConnectError, which means it never left (see reservations.py).
                message = str(exc) or type(exc).__name__
                raise httpx.ReadError(message, request=request) from exc
            if answer.will_close:
                connection.close()
            else:
                self._checkin(connection)
            return httpx.Response(
                answer.status, headers=answer.getheaders(), content=content, request=request
            )
        raise AssertionError("unreachable")  # the loop returns or raises

    def _checkout(self, request: httpx.Request) -> tuple[_Connection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            return self._connect(request), False

    def _checkin(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        try:
            self._idle.put_nowait(connection)
        except queue.Full:
            connection.close()

    def _connect(self, request: httpx.Request) -> _Connection:
        try:
            timeout = _current().timeout(self._connect_timeout)
            connection = _Connection(self._host, self._port, timeout=timeout)
            connection.connect()
        except TimeoutError as exc:
            message = str(exc) or "connect timed out"
            raise httpx.ConnectTimeout(message, request=request) from exc
        except OSError as exc:
            message = str(exc) or type(exc).__name__
            raise httpx.ConnectError(message, request=request) from exc
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _drain(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class _BoundedResponse(http.client.HTTPResponse):
    """An http.client response read through :class:`_BoundedReader`."""

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: Any = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # nothing was read through it yet
        self.fp = io.BufferedReader(_BoundedReader(sock))


class _Connection(http.client.HTTPConnection):
    """An http.client connection whose writes and reads keep to the call's limits."""

    response_class = _BoundedResponse

    def send(self, data: Any) -> None:
        limits = _current()
        if self.sock is not None:
            self.sock.settimeout(limits.timeout(limits.read_timeout))
        super().send(data)


class _BoundedReader(io.RawIOBase):
    """The socket's bytes, each read waiting at most what is left of the call's deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        # Read through the socket's own file, as http.client does: it keeps the socket open
        # until the body is read, even once the connection closed its side ("close" heads).
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        limits = _current()
        self._sock.settimeout(limits.timeout(limits.read_timeout))
        size = self._raw.readinto(buffer)
        limits.count(size or 0)
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


def _dumps(value: Any) -> bytes | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":")).encode()


# --- httpx (https, proxies) --------------------------------------------------------------


class BoundedHttpx:
    """An httpx.Client as runcycles uses it (``post``, ``get``, ``close``), every call kept
    to ``total_s`` and the answer cap; :func:`bound_httpx` must have wrapped its pools."""

    def __init__(
        self, http: httpx.Client, *, total_s: float, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.http = http
        self._total_s = total_s
        self._max_answer_bytes = max_answer_bytes
        read = http.timeout.read
        self._read_timeout = total_s if read is None else read

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with limited(self._total_s, self._read_timeout, self._max_answer_bytes):
            return self.http.request(method, url, **kwargs)

    def post(
        self, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.request("POST", path, json=json, headers=headers)

    def get(self, path: str, *, params: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, params=params)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BoundedHttpx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bound_httpx(http: httpx.Client, *, total_s: float) -> BoundedHttpx:
    """``http`` with every network stream of its pools (direct and proxied) kept to the
    limits of the call in progress.

    httpx has no total deadline and lets no one pass a network backend, so each pool's
    httpcore backend (``transport._pool._network_backend``, which httpcore documents as
    pluggable) is wrapped here; ``cycles/test_runcycles_compat.py`` under ``tests/`` fails
    when httpx changes it.
    """
    transports = [http._transport, *(t for t in http._mounts.values() if t is not None)]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if not isinstance(pool, httpcore.ConnectionPool):
            raise RuntimeError(f"cannot bound Cycles calls through {type(transport).__name__}")
        if not isinstance(pool._network_backend, _BoundedBackend):
            pool._network_backend = _BoundedBackend(pool._network_backend)
    return BoundedHttpx(http, total_s=total_s)


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    limits = _LIMITS.get()
    if limits is None:
        return timeout
    try:
        return limits.timeout(timeout)
    except TimeoutError as exc:
        raise error(str(exc)) from exc


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))
        limits = _LIMITS.get()
        if limits is not None:
            try:
                limits.count(len(data))
            except AnswerTooLarge as exc:
                raise httpcore.ReadError(str(exc)) from exc
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamp(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)
