"""A fault-injecting HTTP proxy to put between the app and a Cycles server, over real sockets.

    proxy = FaultProxy(cycles_server.base_url).start()   # or the ``fault_proxy`` fixture
    app = make_app(proxy.base_url)
    proxy.on("POST /v1/reservations", Drip(every_s=0.5))  # every reserve answer drips
    proxy.on("POST /v1/reservations/*/commit", Refuse(), times=2)  # the next two commits
    proxy.clear()                                         # everything passes again

Rules match ``"METHOD /path"`` (no query string) with shell wildcards, newest rule first, and
can be changed at any time from the test. Every fault but :class:`Refuse` first forwards the
request, so Cycles acts on it (a reservation is created, a commit lands) and only the answer
is lost, late or damaged: what a flaky network does. Each request is recorded as an
:class:`Exchange` (``proxy.exchanges``), including whether the app hung up before its answer
was complete, which is how a test proves a deadline without timing anything.

Standard library only; one thread per connection; every wait is bounded by ``limit_s`` and
ends when the proxy stops.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlsplit

# --- faults ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refuse:
    """Close the connection as soon as the request arrives: Cycles never sees it."""


@dataclass(frozen=True)
class Drop:
    """Forward to Cycles, then close without a byte of its answer."""


@dataclass(frozen=True)
class Cut:
    """Forward, send the first ``after_bytes`` of the answer (head included; a negative
    count: all but that many of its last bytes), then close."""

    after_bytes: int


@dataclass(frozen=True)
class Garble:
    """Forward, send the status and headers intact and the body's bytes scrambled."""


@dataclass(frozen=True)
class Delay:
    """Forward, wait ``seconds`` (or until the app hangs up), then send the whole answer."""

    seconds: float


@dataclass(frozen=True)
class Drip:
    """Forward, then send the answer one byte every ``every_s``; the status line and headers
    too when ``headers`` (a slow head), else the head at once and the body dripped."""

    every_s: float
    headers: bool = False


@dataclass(frozen=True)
class Stall:
    """Forward, send the status line, then nothing more until the app hangs up."""


@dataclass(frozen=True)
class Huge:
    """Forward, then answer 200 with a JSON body of ``size`` bytes, sent as fast as the app
    reads it (with a Content-Length, or chunked and without one)."""

    size: int
    chunked: bool = False


@dataclass(frozen=True)
class Gateway:
    """Forward, then answer ``status`` with an HTML page instead of Cycles' answer: a load
    balancer that gave up waiting (Cycles acted; the app never hears how)."""

    status: int = 504


Fault = Refuse | Drop | Cut | Garble | Delay | Drip | Stall | Huge | Gateway


# --- what happened -----------------------------------------------------------------------


@dataclass
class Exchange:
    """One request through the proxy and what became of its answer."""

    operation: str  # "POST /v1/reservations/{id}/commit": ids replaced, no query string
    fault: str  # the fault's class name, or "pass"
    request_body: bytes
    upstream_status: int | None = None  # None: not forwarded, or Cycles did not answer
    sent: int = 0  # bytes of the answer the app was sent
    answer_size: int = 0  # bytes the whole answer has (0 when none was due)
    app_hung_up: bool = False  # the app closed the connection before its answer was complete
    done: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class _Rule:
    pattern: str
    fault: Fault
    times: int | None


# Reservation ids in paths become {id}, so one operation has one name.
_ID = re.compile(r"(?<=/v1/reservations/)[^/?]+")
CHUNK = 65536


class FaultProxy:
    """A plain-HTTP proxy in front of ``upstream`` (a base URL) that injects faults per rule."""

    def __init__(self, upstream: str, *, limit_s: float = 30.0) -> None:
        url = urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self.limit_s = limit_s  # no fault holds a connection longer than this
        self.exchanges: list[Exchange] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop sees stop()
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    # --- control, from the test ---

    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Stop accepting, end every connection and wait (bounded) for the threads."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on(self, pattern: str, fault: Fault, *, times: int | None = None) -> None:
        """Apply ``fault`` to requests matching ``pattern`` (``times`` of them, or all)."""
        with self._lock:
            self._rules.insert(0, _Rule(pattern, fault, times))

    def clear(self) -> None:
        """Let everything through again."""
        with self._lock:
            self._rules.clear()

    def of(self, operation: str) -> list[Exchange]:
        """The exchanges of ``operation`` (a pattern, as for :meth:`on`), oldest first."""
        with self._lock:
            return [e for e in self.exchanges if fnmatch.fnmatchcase(e.operation, operation)]

    def wait_done(self, operation: str, count: int = 1, timeout_s: float = 10.0) -> list[Exchange]:
        """Wait until ``count`` exchanges of ``operation`` have finished; return them."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.of(operation)
            if len(found) >= count and all(e.done.is_set() for e in found[:count]):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} x {operation} not done: {found}")
            time.sleep(0.01)

    # --- the proxy ---

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            sock.settimeout(None)
            self._spawn(self._serve, sock)

    def _track(self, sock: socket.socket, on: bool) -> None:
        with self._lock:
            if on:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _serve(self, app: socket.socket) -> None:
        self._track(app, True)
        reader = app.makefile("rb")
        try:
            while not self._stopping.is_set():
                request = _read_message(reader)
                if request is None:
                    return  # the app closed a kept-alive connection
                if not self._answer(app, *request):
                    return
        except OSError:
            return
        finally:
            self._track(app, False)
            reader.close()
            with contextlib.suppress(OSError):
                app.close()

    def _answer(self, app: socket.socket, head: bytes, body: bytes) -> bool:
        """Answer one request; False when the connection must close."""
        method, target = head.split(b" ", 2)[:2]
        path = urlsplit(target.decode("latin-1")).path  # also absolute-form (HTTP_PROXY)
        operation = f"{method.decode()} {_ID.sub('{id}', path)}"
        fault = self._fault_for(f"{method.decode()} {path}", operation)
        exchange = Exchange(operation, type(fault).__name__ if fault else "pass", body)
        with self._lock:
            self.exchanges.append(exchange)
        try:
            if isinstance(fault, Refuse):
                return False
            answer = self._forward(head, body, exchange)
            if answer is None:
                return False
            return self._send(app, answer, fault, exchange)
        finally:
            exchange.done.set()

    def _fault_for(self, request: str, operation: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.times == 0:
                    continue
                if fnmatch.fnmatchcase(request, rule.pattern) or fnmatch.fnmatchcase(
                    operation, rule.pattern
                ):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.fault
        return None

    def _forward(self, head: bytes, body: bytes, exchange: Exchange) -> bytes | None:
        """Send the request to Cycles on a new connection; its whole answer, keep-alive."""
        lines = head.split(b"\r\n")
        method, target, version = lines[0].split(b" ", 2)
        url = urlsplit(target.decode("latin-1"))  # absolute-form when sent as to a proxy
        target = (url.path + (f"?{url.query}" if url.query else "")).encode("latin-1")
        kept = [x for x in lines[1:] if x and not x.lower().startswith((b"connection:", b"host:"))]
        host = f"{self._upstream[0]}:{self._upstream[1]}".encode()
        request = b"\r\n".join(
            [b" ".join([method, target, version]), b"Host: " + host, *kept, b"Connection: close"]
        )
        try:
            with socket.create_connection(self._upstream, timeout=self.limit_s) as upstream:
                upstream.sendall(request + b"\r\n\r\n" + body)
                with upstream.makefile("rb") as reader:
                    answer = _read_message(reader)
        except OSError:
            return None
        if answer is None:
            return None
        answer_head, answer_body = answer
        status_line, *headers = answer_head.split(b"\r\n")
        exchange.upstream_status = int(status_line.split(b" ")[1])
        headers = [x for x in headers if x and not x.lower().startswith(b"connection:")]
        return b"\r\n".join([status_line, *headers]) + b"\r\n\r\n" + answer_body

    def _send(self, app: socket.socket, answer: bytes, fault: Fault | None, ex: Exchange) -> bool:
        head_size = answer.index(b"\r\n\r\n") + 4
        ex.answer_size = len(answer)
        match fault:
            case None:
                return self._write(app, answer, ex)
            case Drop():
                return False
            case Cut(after_bytes=n):
                self._write(app, answer[:n], ex)
                return False
            case Garble():
                body = bytes(b ^ 0x5A for b in answer[head_size:])
                return self._write(app, answer[:head_size] + body, ex)
            case Delay(seconds=seconds):
                if self._app_hung_up(app, seconds):
                    ex.app_hung_up = True
                    return False
                return self._write(app, answer, ex)
            case Drip(every_s=every_s, headers=slow_head):
                start = 0 if slow_head else head_size
                if not self._write(app, answer[:start], ex):
                    return False
                for i in range(start, len(answer)):
                    if not self._write(app, answer[i : i + 1], ex):
                        return False
                    if i + 1 < len(answer) and self._app_hung_up(app, every_s):
                        ex.app_hung_up = True
                        return False
                return True
            case Stall():
                self._write(app, answer[: answer.index(b"\r\n") + 2], ex)
                ex.app_hung_up = self._app_hung_up(app, self.limit_s)
                return False
            case Huge(size=size, chunked=chunked):
                return self._send_huge(app, size, chunked, ex)
            case Gateway(status=status):
                page = b"<html><body><h1>%d Gateway Timeout</h1></body></html>" % status
                head = b"HTTP/1.1 %d Gateway Timeout\r\nContent-Type: text/html\r\n" % status
                return self._write(app, head + b"Content-Length: %d\r\n\r\n" % len(page) + page, ex)
        raise AssertionError(f"unknown fault {fault!r}")

    def _send_huge(self, app: socket.socket, size: int, chunked: bool, ex: Exchange) -> bool:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"
        ex.answer_size = len(head) + size + (5 if chunked else 0)  # chunk sizes added below
        if not self._write(app, head, ex):
            return False
        for piece in _json_of_size(size):
            if self._stopping.is_set():
                return False
            framed = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            ex.answer_size += len(framed) - len(piece)
            if not self._write(app, framed, ex):
                return False
        return not chunked or self._write(app, b"0\r\n\r\n", ex)

    def _write(self, app: socket.socket, data: bytes, ex: Exchange) -> bool:
        try:
            app.sendall(data)
        except OSError:
            ex.app_hung_up = True
            return False
        ex.sent += len(data)
        return True

    def _app_hung_up(self, app: socket.socket, seconds: float) -> bool:
        """Wait up to ``seconds``; True as soon as the app closes its connection.

        The app sent its whole request and waits for the answer, so anything readable on its
        connection now is its end of the stream (or a reset).
        """
        deadline = time.monotonic() + min(seconds, self.limit_s)
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([app], [], [], min(left, 0.05))
            if readable:
                try:
                    return app.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True
        return False


def _json_of_size(size: int) -> Iterator[bytes]:
    """A JSON object of exactly ``size`` bytes (at least 10), in pieces of at most CHUNK."""
    opening, closing = b'{"pad":"', b'"}'
    yield opening
    left = size - len(opening) - len(closing)
    while left > 0:
        yield b"a" * min(left, CHUNK)
        left -= CHUNK
    yield closing


def _read_message(reader: BinaryIO) -> tuple[bytes, bytes] | None:
    """One HTTP message's head (without the blank line) and body, or None at end of stream."""
    lines = []
    while True:
        line = reader.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line.rstrip(b"\r\n"))
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return b"\r\n".join(lines), reader.read(length) if length else b""
