"""The connection front end: one thread multiplexes every connection with ``selectors``.

A thread per connection lets a client that trickles its request hold a thread for as long as
it likes, and lets a thousand idle clients hold a thousand threads. Here one thread accepts,
reads, parses and answers, so the thread count is fixed however many clients connect, and:

* a request (head and body) must be complete within ``request_timeout_s`` of its first byte,
  not of its latest byte; past it the client gets a 408 and the connection closes;
* a connection with nothing to do closes after ``idle_timeout_s``;
* at most ``max_connections`` are served at once; one more is answered 503 and closed;
* after a final answer the server closes its side and drains what the client still sends for
  ``linger_s``, so the client reads the answer instead of a connection reset.

Each turn of the loop reads whatever the ready connections sent, checks the deadlines, then
answers every request that is now complete. SQLite takes one writer at a time anyway, so the
requests are answered one after another, and when several are ready together their writes
share one transaction (``group``: one commit instead of one each; a commit is about a third
of a reservation's server time). Their answers leave only after that commit. A connection has
at most one request being answered; pipelined requests wait in its buffer (reading pauses once
it holds a whole maximal request) and are answered in order. The price of one thread: while a
request waits for SQLite (another process holding the write lock), every connection waits; a
thread per connection would have served only the reads meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import LedgerError
from . import codec
from .codec import BadRequest, Head

log = logging.getLogger(__name__.rsplit(".", 1)[0])

RECV_SIZE = 65536
#: Reading pauses while a connection's buffer holds this much (one maximal request).
MAX_BUFFERED = codec.MAX_HEAD + codec.MAX_BODY
#: Longest the loop sleeps: how often timeouts are checked.
TICK_S = 0.25


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    request_timeout_s: float = 5.0
    idle_timeout_s: float = 120.0
    linger_s: float = 2.0


@dataclass
class Job:
    """A complete request, to be answered."""

    conn: Connection
    head: Head
    body: bytes
    request_id: str


#: Turns a request into its whole response (head and body) and whether to keep the connection.
Responder = Callable[[Job], tuple[bytes, bool]]
#: Opens a block whose ledger writes share one transaction, committed when the block exits.
GroupCommit = Callable[[], contextlib.AbstractContextManager[object]]


class Connection:
    """One client connection; its state belongs to the loop thread (see module docstring)."""

    __slots__ = (
        "busy",
        "close_after",
        "closed",
        "deadline",
        "events",
        "finishing",
        "head",
        "head_size",
        "inbuf",
        "last_progress",
        "linger_until",
        "lingering",
        "outbuf",
        "paused",
        "peer_closed",
        "scanned",
        "sock",
    )

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.scanned = 0  # where the search for the end of the head resumes
        self.head: Head | None = None  # parsed head of a request whose body is still arriving
        self.head_size = 0
        self.busy = False  # a request is being answered: do not parse the next one yet
        self.outbuf = b""  # unsent bytes, in order
        self.finishing = False  # outbuf ends with the final response of the current request
        self.close_after = False  # close once the final response is out
        self.deadline: float | None = None  # the request being received must be complete by then
        self.last_progress = now  # idle and stalled-write timeouts count from here
        self.peer_closed = False
        self.paused = False  # reading paused: the buffer is full
        self.lingering = False
        self.linger_until = 0.0
        self.events = 0  # selector interest currently registered
        self.closed = False


class FrontEnd:
    """Accepts and serves connections on ``listener`` until ``stop()``."""

    def __init__(
        self,
        listener: socket.socket,
        respond: Responder,
        limits: Limits,
        *,
        timer: Callable[[], float] = time.monotonic,
        group: GroupCommit | None = None,
    ) -> None:
        self.limits = limits
        self._listener = listener
        self._respond = respond
        self._group = group
        self._timer = timer
        self._selector = selectors.DefaultSelector()
        self._conns: set[Connection] = set()
        self._active = 0  # connections counted against max_connections (not lingering)
        self._lingering = 0
        self._ready: list[Job] = []  # complete requests, answered at the end of this turn
        # stop() writes a byte here so the loop does not sleep out its tick first.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._serving = False
        self._accepting = False
        self._next_sweep = 0.0
        self.rejected = 0  # connections answered 503 over the cap (for tests and benchmarks)
        self.timed_out = 0  # requests answered 408

    @property
    def open_connections(self) -> int:
        """Connections being served now (lingering closes excluded)."""
        return self._active

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        """Run the loop on the calling thread until ``stop()``."""
        self._serving = True
        self._listener.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._set_accepting(True)
        try:
            while not self._stopping:
                self._turn()
        finally:
            self._release()

    def stop(self) -> None:
        """Ask the loop to finish (from any thread); it closes every connection on its way out."""
        self._stopping = True
        if not self._serving:  # never served: no loop will release what __init__ opened
            self._release()
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _release(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ the loop

    def _turn(self) -> None:
        """Read what is ready, enforce the deadlines, answer the complete requests."""
        for key, mask in self._selector.select(0 if self._ready else TICK_S):
            if key.data == "listen":
                self._accept()
            elif key.data != "wake":
                self._guarded(key.data, self._on_event, key.data, mask)
        # Deadlines before answering: after a long answer, what clients sent meanwhile has
        # been read (above) before anyone is timed out.
        now = self._timer()
        if now >= self._next_sweep:
            self._sweep(now)
        self._answer_ready()

    def _guarded(self, conn: Connection, step: Callable[..., None], *args: Any) -> None:
        """Run one connection's ``step``; a bug in it costs that connection, not the server."""
        try:
            step(*args)
        except Exception:
            log.exception("localcycles: dropping a connection after an error")
            self._close(conn)

    def _set_accepting(self, on: bool) -> None:
        if on and not self._accepting:
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        elif not on and self._accepting:
            self._selector.unregister(self._listener)
        self._accepting = on

    def _accept(self) -> None:
        for _ in range(64):  # bounded, so a connection flood cannot starve the others
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: retry at the next sweep
                log.warning("localcycles: accept failed (%s); pausing new connections", exc)
                self._set_accepting(False)
                return
            if self._active >= self.limits.max_connections and (
                self._lingering >= self.limits.max_connections
            ):
                self.rejected += 1
                sock.close()  # even the refusals are over their cap: no answer
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self._timer())
            self._conns.add(conn)
            self._active += 1
            if self._active <= self.limits.max_connections:
                self._interest(conn)
                continue
            # Over the cap: answer 503 at once; _linger then moves it out of the active count.
            self.rejected += 1
            error = LedgerError(
                503,
                "INTERNAL_ERROR",
                "Too many open connections; retry shortly",
                headers={"Retry-After": "1"},
            )
            self._answer_and_close(conn, error, {})

    def _on_event(self, conn: Connection, mask: int) -> None:
        if conn.closed:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and not conn.closed:
            self._on_readable(conn)

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client closed its side; answers still due go out first
            conn.peer_closed = True
            if conn.lingering:
                self._close(conn)
                return
            self._interest(conn)
            if not conn.busy:
                self._advance(conn)  # closes it: only an incomplete request can be left
            return
        if conn.lingering:
            return  # the answer is out; what the client still sends is discarded
        conn.inbuf += data
        conn.last_progress = self._timer()
        if not conn.busy:
            self._advance(conn)
        elif len(conn.inbuf) >= MAX_BUFFERED:
            conn.paused = True
            self._interest(conn)

    def _advance(self, conn: Connection) -> None:
        """Parse the next request from the buffer; once complete, queue it for this turn."""
        buf = conn.inbuf
        if not buf:
            conn.deadline = None
            if conn.peer_closed:
                self._close(conn)
            return
        if conn.deadline is None:
            conn.deadline = self._timer() + self.limits.request_timeout_s
        head = conn.head
        try:
            if head is None:
                end = codec.head_end(buf, max(0, conn.scanned - 2))
                if end == -1:
                    conn.scanned = len(buf)
                    codec.check_partial_head(buf)
                    if conn.peer_closed:
                        self._close(conn)
                    return
                head = conn.head = codec.parse_head(bytes(buf[:end]))
                conn.head_size, conn.scanned = end, 0
                if head.expects_continue and len(buf) < end + head.content_length:
                    self._write(conn, codec.CONTINUE)
        except BadRequest as exc:
            self._answer_and_close(conn, exc.error, exc.headers)
            return
        total = conn.head_size + head.content_length
        if len(buf) < total:
            if conn.peer_closed:
                self._close(conn)
            return
        body = bytes(buf[conn.head_size : total])
        del buf[:total]
        conn.head, conn.deadline = None, None
        conn.busy = True
        self._ready.append(Job(conn, head, body, codec.new_request_id()))

    def _answer_and_close(
        self, conn: Connection, error: LedgerError, headers: dict[str, str]
    ) -> None:
        data = codec.error_response(error, codec.new_request_id(), headers, False)
        conn.busy = True  # nothing more is parsed from this connection
        self._finish(conn, data, keep_alive=False)

    def _finish(self, conn: Connection, data: bytes, keep_alive: bool) -> None:
        """Send the final response of the current request, then go on or close."""
        conn.finishing = True
        conn.close_after = not keep_alive
        self._write(conn, data)

    def _write(self, conn: Connection, data: bytes) -> None:
        if conn.outbuf:
            conn.outbuf += data
        else:
            conn.outbuf = data
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            conn.outbuf = conn.outbuf[sent:]
            if sent:
                conn.last_progress = self._timer()
        if conn.outbuf or not conn.finishing:
            self._interest(conn)
            return
        conn.finishing = False
        if conn.close_after:
            self._linger(conn)
        else:
            conn.busy = False
            self._resume(conn)

    def _resume(self, conn: Connection) -> None:
        """The connection's request is answered: read and parse again."""
        if conn.closed or conn.busy:
            return
        conn.paused = False
        self._interest(conn)
        self._advance(conn)

    def _linger(self, conn: Connection) -> None:
        """Close our side after the final answer; drain the client's until EOF or linger_s."""
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.lingering = True
        conn.linger_until = self._timer() + self.limits.linger_s
        conn.inbuf.clear()
        self._active -= 1
        self._lingering += 1
        if conn.peer_closed:
            self._close(conn)
            return
        conn.paused = False
        self._interest(conn)

    def _interest(self, conn: Connection) -> None:
        if conn.closed:
            return
        events = 0
        if not (conn.peer_closed or conn.paused):
            events |= selectors.EVENT_READ
        if conn.outbuf:
            events |= selectors.EVENT_WRITE
        if events == conn.events:
            return
        if conn.events == 0:
            self._selector.register(conn.sock, events, conn)
        elif events == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)
            conn.events = 0
        conn.sock.close()
        self._conns.discard(conn)
        if conn.lingering:
            self._lingering -= 1
        else:
            self._active -= 1

    def _sweep(self, now: float) -> None:
        """Enforce the deadlines (runs at most every TICK_S)."""
        self._next_sweep = now + TICK_S
        if not self._accepting:
            self._set_accepting(True)
        idle = self.limits.idle_timeout_s
        for conn in list(self._conns):
            if conn.lingering:
                if now >= conn.linger_until:
                    self._close(conn)
            elif conn.busy:
                if conn.finishing and now - conn.last_progress >= idle:
                    self._close(conn)  # the client stopped reading its answer
            elif conn.deadline is not None and now >= conn.deadline:
                self.timed_out += 1
                self._guarded(conn, self._time_out, conn)
            elif not conn.inbuf and now - conn.last_progress >= idle:
                self._close(conn)

    def _time_out(self, conn: Connection) -> None:
        seconds = f"{self.limits.request_timeout_s:g}"
        error = LedgerError(408, "INVALID_REQUEST", f"Request not received within {seconds} s")
        self._answer_and_close(conn, error, conn.head.headers if conn.head else {})

    def _answer_ready(self) -> None:
        """Answer the complete requests of this turn, in arrival order, then send the answers."""
        jobs = [job for job in self._ready if not job.conn.closed]
        self._ready = []
        if len(jobs) > 1 and self._group is not None:
            try:
                with self._group():
                    answers = [self._answer(job) for job in jobs]
            except Exception:  # the shared commit failed, so none of these writes was kept
                log.exception("localcycles: group commit of %d requests failed", len(jobs))
                answers = [_internal_error(job) for job in jobs]
        else:
            answers = [self._answer(job) for job in jobs]
        for job, (data, keep_alive) in zip(jobs, answers, strict=True):
            if not job.conn.closed:
                self._guarded(job.conn, self._finish, job.conn, data, keep_alive)

    def _answer(self, job: Job) -> tuple[bytes, bool]:
        try:
            return self._respond(job)
        except Exception:  # the responder renders errors itself; this keeps the loop alive
            log.exception("localcycles: responder failed")
            return _internal_error(job)


def _internal_error(job: Job) -> tuple[bytes, bool]:
    """A 500 for ``job`` that closes the connection."""
    error = LedgerError(500, "INTERNAL_ERROR", "Internal error")
    return codec.error_response(error, job.request_id, job.head.headers, False), False
