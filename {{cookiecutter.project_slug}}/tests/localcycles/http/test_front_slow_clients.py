"""Slow and many clients against the embedded server, over real sockets.

The server's deadlines run on an injected timer that only these tests move, so nothing here
depends on how fast the machine is: a request times out exactly when the test has moved the
timer past its deadline, and never before.

Synchronisation without sleeping: the server's single loop thread reads every connection. Two
sequential round trips on another connection (``loop_barrier``) prove that the loop has
finished the iteration in which it saw anything sent before them, because the second request
can only be read in a later iteration than the first.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runcycles import CyclesClient, CyclesConfig

from localcycles import LocalCyclesServer
from localcycles.http.front import FrontEnd, Job, Limits
from support.localcycles_kit import LC_TENANT, LC_UNIT, reservation_body

CAP = 6
DEADLINE_S = 5.0
IDLE_S = 60.0
TRICKLE_HEAD = (
    b"POST /v1/reservations HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
)


class FakeTimer:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture
def server(tmp_path: Path, timer: FakeTimer) -> Iterator[LocalCyclesServer]:
    limits = Limits(
        max_connections=CAP, request_timeout_s=DEADLINE_S, idle_timeout_s=IDLE_S, linger_s=1.0
    )
    running = LocalCyclesServer(
        str(tmp_path / "cycles.sqlite3"), limits=limits, timer=timer
    ).start()
    yield running
    running.stop()
    running.ledger.close()


@pytest.fixture
def api_key(server: LocalCyclesServer) -> str:
    server.ledger.create_tenant(LC_TENANT)
    key = server.ledger.create_api_key(LC_TENANT)
    server.ledger.set_budget(f"tenant:{LC_TENANT}", LC_UNIT, allocated=1_000_000)
    return key


@pytest.fixture
def normal(server: LocalCyclesServer) -> Iterator[http.client.HTTPConnection]:
    """A well-behaved keep-alive client, connected before any test traffic."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    assert get_json(conn, "/healthz") == (200, {"status": "UP"})
    yield conn
    conn.close()


@pytest.fixture
def cycles(server: LocalCyclesServer, api_key: str, tmp_path: Path) -> Iterator[CyclesClient]:
    client = CyclesClient(
        CyclesConfig(
            base_url=server.base_url,
            api_key=api_key,
            retry_enabled=False,
            retry_flush_timeout=0,
            journal_dir=str(tmp_path / "journal"),
            read_timeout=10.0,
        )
    )
    yield client
    client.close()


def get_json(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def loop_barrier(conn: http.client.HTTPConnection) -> None:
    """Return once the server's loop has handled everything sent before this call."""
    for _ in range(2):
        assert get_json(conn, "/healthz")[0] == 200


def connections_settle(server: LocalCyclesServer, conn: http.client.HTTPConnection, n: int) -> int:
    """The server's open connections once it has caught up with hang-ups (loop turns, not time).

    A hang-up takes the loop a few turns to notice (accept, read, then end of stream), so
    this lets the loop go round until the count is ``n`` or clearly stays elsewhere.
    """
    for _ in range(20):
        if server.front.open_connections == n:
            break
        loop_barrier(conn)
    return server.front.open_connections


def connect(server: LocalCyclesServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def nothing_received(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return not sock.recv(1)  # b"" means the server closed: that is not "nothing"
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


class Replies:
    """Reads HTTP responses one after another from a raw socket (Content-Length bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def next(self) -> tuple[str, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed mid-response: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._fill(), "connection closed mid-body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, json.loads(body)

    def at_eof(self) -> bool:
        return not self.buffer and not self._fill()


def assert_error_body(body: Any, code: str) -> None:
    assert set(body) == {"error", "message", "request_id", "trace_id"}
    assert body["error"] == code and body["message"]


def balances(conn: http.client.HTTPConnection, api_key: str) -> Any:
    status, body = get_json(
        conn, f"/v1/balances?tenant={LC_TENANT}", headers={"X-Cycles-API-Key": api_key}
    )
    assert status == 200
    return body


def test_a_trickled_head_gets_408_at_its_deadline_not_per_byte(
    server: LocalCyclesServer,
    timer: FakeTimer,
    normal: http.client.HTTPConnection,
    cycles: CyclesClient,
    api_key: str,
) -> None:
    before = balances(normal, api_key)
    trickler = connect(server)
    trickler.sendall(TRICKLE_HEAD[:1])
    loop_barrier(normal)  # the deadline now runs from this timer reading

    # A byte every second: each gap is far below the deadline, the total is not.
    for step in range(1, int(DEADLINE_S)):
        timer.advance(1.0)
        trickler.sendall(TRICKLE_HEAD[step : step + 1])
        loop_barrier(normal)
        assert nothing_received(trickler), f"answered before its deadline (step {step})"
        # Meanwhile the normal client is served, through the real runcycles client.
        reservation = cycles.create_reservation(reservation_body(1_000))
        assert reservation.status == 200 and reservation.body is not None, reservation.body
        commit = cycles.commit_reservation(
            reservation.body["reservation_id"],
            {"idempotency_key": f"commit-{step}", "actual": {"unit": LC_UNIT, "amount": 10}},
        )
        assert commit.status == 200, commit.body

    timer.advance(1.0)  # now exactly DEADLINE_S after the first byte
    trickler.sendall(TRICKLE_HEAD[int(DEADLINE_S) : int(DEADLINE_S) + 1])
    replies = Replies(trickler)
    status, headers, body = replies.next()
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert_error_body(body, "INVALID_REQUEST")
    assert replies.at_eof()
    trickler.close()

    after = balances(normal, api_key)
    spent = sum(b["spent"]["amount"] for b in after["balances"]) - sum(
        b["spent"]["amount"] for b in before["balances"]
    )
    assert spent == 10 * (int(DEADLINE_S) - 1)  # only the normal client's commits
    assert all(b["reserved"]["amount"] == 0 for b in after["balances"])
    assert server.front.timed_out == 1


def test_a_trickled_body_gets_408_and_changes_nothing(
    server: LocalCyclesServer,
    timer: FakeTimer,
    normal: http.client.HTTPConnection,
    api_key: str,
) -> None:
    before = balances(normal, api_key)
    body = json.dumps(reservation_body(1_000)).encode()
    sock = connect(server)
    sock.sendall(
        TRICKLE_HEAD
        + f"X-Cycles-API-Key: {api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    loop_barrier(normal)
    timer.advance(DEADLINE_S - 0.5)
    sock.sendall(body[10:20])
    loop_barrier(normal)
    assert nothing_received(sock)
    timer.advance(1.0)
    sock.sendall(body[20:30])
    status, headers, reply = Replies(sock).next()
    assert status.startswith("HTTP/1.1 408 ") and headers["connection"] == "close"
    assert_error_body(reply, "INVALID_REQUEST")
    sock.close()
    assert balances(normal, api_key) == before


def test_idle_connections_over_the_cap_are_refused_without_new_threads(
    server: LocalCyclesServer, timer: FakeTimer, normal: http.client.HTTPConnection
) -> None:
    threads_before = threading.active_count()
    idle = [connect(server) for _ in range(CAP - 1)]  # the normal client holds one slot
    refused = [connect(server) for _ in range(3)]
    for sock in refused:  # connections are accepted in order: these are the ones over
        replies = Replies(sock)
        status, headers, body = replies.next()
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close" and headers["retry-after"] == "1"
        assert_error_body(body, "INTERNAL_ERROR")
        assert replies.at_eof()
        sock.close()
    assert connections_settle(server, normal, CAP) == CAP
    assert threading.active_count() == threads_before
    assert server.front.rejected == 3

    # The clients already connected are still served, on their kept-alive connection.
    assert get_json(normal, "/healthz") == (200, {"status": "UP"})

    # Idle connections are closed (without an answer) once the idle timeout has passed...
    timer.advance(IDLE_S + 1)
    for sock in idle:
        assert Replies(sock).at_eof()
        sock.close()
    # ...which frees their slots for new clients.
    fresh = http.client.HTTPConnection(server.host, server.port, timeout=10)
    assert get_json(fresh, "/healthz") == (200, {"status": "UP"})
    fresh.close()


def test_many_trickling_clients_hold_no_threads_and_all_time_out(
    server: LocalCyclesServer, timer: FakeTimer, normal: http.client.HTTPConnection
) -> None:
    threads_before = threading.active_count()
    tricklers = [connect(server) for _ in range(CAP - 1)]
    for step in range(3):
        for sock in tricklers:
            sock.sendall(TRICKLE_HEAD[step : step + 1])
        loop_barrier(normal)
    assert threading.active_count() == threads_before
    assert all(nothing_received(sock) for sock in tricklers)
    timer.advance(DEADLINE_S)
    for sock in tricklers:
        sock.sendall(TRICKLE_HEAD[3:4])
    for sock in tricklers:
        status, _, body = Replies(sock).next()
        assert status.startswith("HTTP/1.1 408 ")
        assert_error_body(body, "INVALID_REQUEST")
        sock.close()
    assert get_json(normal, "/healthz")[0] == 200


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    server: LocalCyclesServer, api_key: str
) -> None:
    sock = connect(server)
    auth = f"X-Cycles-API-Key: {api_key}\r\n".encode()
    body = json.dumps(reservation_body(500)).encode()
    reserve = (
        b"POST /v1/reservations HTTP/1.1\r\nHost: local\r\n"
        + auth
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    health = b"GET /healthz HTTP/1.1\r\nHost: local\r\n\r\n"
    missing = b"GET /v1/reservations/rsv_missing HTTP/1.1\r\nHost: local\r\n" + auth + b"\r\n"
    sock.sendall(health + reserve + missing + health)  # four requests in one write
    replies = Replies(sock)
    assert replies.next()[2] == {"status": "UP"}
    status, _, reserved = replies.next()
    assert status == "HTTP/1.1 200 OK" and reserved["decision"] == "ALLOW"
    status, headers, error = replies.next()
    assert status == "HTTP/1.1 404 Not Found" and "connection" not in headers
    assert_error_body(error, "NOT_FOUND")
    assert replies.next()[2] == {"status": "UP"}

    # The same connection serves on; `Connection: close` is honoured after its answer.
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
    status, headers, body_json = replies.next()
    assert body_json == {"status": "UP"} and headers["connection"] == "close"
    assert replies.at_eof()
    sock.close()


def test_a_client_that_hangs_up_mid_request_frees_its_slot(
    server: LocalCyclesServer, normal: http.client.HTTPConnection
) -> None:
    for _ in range(CAP * 2):  # more than the cap: each slot must come back
        sock = connect(server)
        sock.sendall(TRICKLE_HEAD[:20])
        sock.close()
        loop_barrier(normal)
    assert connections_settle(server, normal, 1) == 1  # the normal client
    assert server.front.rejected == 0


def test_expect_100_continue_gets_the_interim_answer_then_the_final_one(
    server: LocalCyclesServer, api_key: str
) -> None:
    body = json.dumps(reservation_body(700)).encode()
    sock = connect(server)
    sock.sendall(
        b"POST /v1/reservations HTTP/1.1\r\nHost: local\r\nExpect: 100-continue\r\n"
        + f"X-Cycles-API-Key: {api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, "closed before the interim answer"
        interim += chunk
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    status, _, reserved = Replies(sock).next()
    assert status == "HTTP/1.1 200 OK" and reserved["decision"] == "ALLOW"
    sock.close()


def test_group_commit_keeps_each_write_apart_and_commits_once(
    server: LocalCyclesServer,
) -> None:
    """The ledger hook behind group commit: one transaction, one savepoint per write."""
    db = server.ledger.db

    def stored(key: str) -> str | None:
        with db.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    with db.group_commit():
        with db.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('kept', '1')")
        with pytest.raises(RuntimeError), db.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('undone', '1')")
            raise RuntimeError("this write fails")
        assert stored("kept") is None  # not committed yet: readers do not see it
    assert (stored("kept"), stored("undone")) == ("1", None)

    with pytest.raises(RuntimeError), db.group_commit():
        with db.write() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('never', '1')")
        raise RuntimeError("the whole group fails")
    assert stored("never") is None


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_a_head_sent_a_byte_at_a_time_is_answered_once_complete(
    server: LocalCyclesServer, normal: http.client.HTTPConnection, line_end: bytes
) -> None:
    # Each byte is read on its own (loop_barrier), so the blank line that ends the head
    # arrives split across reads; the search for it must look back across the split.
    head = line_end.join([b"GET /healthz HTTP/1.1", b"Host: local", b"", b""])
    sock = connect(server)
    for byte in head[:-1]:
        sock.sendall(bytes([byte]))
        loop_barrier(normal)
    assert nothing_received(sock)  # one byte short of a head: not a request yet
    sock.settimeout(10)  # a head never recognised fails the test instead of hanging it
    sock.sendall(head[-1:])
    status, _, body = Replies(sock).next()
    assert status == "HTTP/1.1 200 OK" and body == {"status": "UP"}
    sock.close()


def test_after_its_closing_answer_the_server_drains_what_the_client_still_sends(
    server: LocalCyclesServer, normal: http.client.HTTPConnection
) -> None:
    # Closing a socket with unread input makes the kernel answer the client with a reset,
    # which can destroy the answer before the client reads it; so the server closes only its
    # sending side and keeps reading (and discarding) until the client is done.
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
    replies = Replies(sock)
    status, headers, body = replies.next()
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert body == {"status": "UP"}
    assert replies.at_eof()  # the server's side is closed
    loop_barrier(normal)  # the loop is done with that connection's answer
    for _ in range(3):
        sock.sendall(b"late bytes")  # a closed socket would answer with a reset
        loop_barrier(normal)
    sock.close()


# An answer far larger than the socket buffers between server and client: while the client
# does not read, most of it waits in the server's output buffer.
HUGE = 32 * 1024 * 1024


def answer_head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


@pytest.fixture
def huge_front(timer: FakeTimer) -> Iterator[FrontEnd]:
    """A front end (no ledger) that answers /huge with HUGE bytes and anything else with a
    small answer; its deadlines run on ``timer``."""

    def respond(job: Job) -> tuple[bytes, bool]:
        body = b"x" * (HUGE if job.head.target == "/huge" else 2)
        return answer_head(len(body)) + body, True

    listener = socket.create_server(("127.0.0.1", 0))
    front = FrontEnd(listener, respond, Limits(idle_timeout_s=IDLE_S), timer=timer)
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    yield front
    front.stop()
    thread.join(timeout=10)
    listener.close()


def test_a_client_reading_a_large_answer_slowly_keeps_it_one_that_stopped_loses_it(
    huge_front: FrontEnd, timer: FakeTimer
) -> None:
    address = huge_front._listener.getsockname()

    def barrier() -> None:
        # Two round trips: the loop has handled what was sent before. On a new connection
        # each time, which no idle timeout can have closed meanwhile.
        other = http.client.HTTPConnection(*address, timeout=10)
        for _ in range(2):
            other.request("GET", "/small")
            assert other.getresponse().read() == b"xx"
        other.close()

    def ask_huge() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(b"GET /huge HTTP/1.1\r\nHost: local\r\n\r\n")
        barrier()  # answered: what did not fit the socket buffers waits to be sent
        return sock

    whole = len(answer_head(HUGE)) + HUGE

    def read_all(sock: socket.socket) -> int:
        received = 0
        while received < whole and (chunk := sock.recv(1 << 20)):
            received += len(chunk)
        return received

    # A slow reader: the deadline sweeps run meanwhile, but within the idle timeout of
    # its last progress the answer is kept for it and arrives whole.
    slow = ask_huge()
    timer.advance(IDLE_S - 1)
    barrier()
    assert read_all(slow) == whole
    slow.close()

    # A client that stopped reading: past the idle timeout the server drops the answer
    # and closes the connection, so it holds neither a slot nor the buffered bytes (a
    # connection left open would make the read below time out).
    stalled = ask_huge()
    for _ in range(3):  # (the kernel may still take a few bytes just as the timer moves)
        timer.advance(IDLE_S + 1)
        barrier()
    assert read_all(stalled) < whole  # what was in flight, then the end of the stream
    stalled.close()


class Group:
    """A group commit that records which requests each block answered; ``fail`` makes the
    block's commit raise, as a failed shared COMMIT does."""

    def __init__(self) -> None:
        self.blocks: list[list[str]] = []
        self.alone: list[str] = []  # requests answered outside any block
        self.open = False
        self.fail = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.blocks.append([])
        self.open = True
        try:
            yield
        finally:
            self.open = False
        if self.fail:
            raise RuntimeError("the shared commit failed")

    def answering(self, target: str) -> None:
        (self.blocks[-1] if self.open else self.alone).append(target)


def test_requests_ready_together_share_one_commit_and_all_fail_with_it(timer: FakeTimer) -> None:
    entered, gate = threading.Event(), threading.Event()
    group = Group()

    def respond(job: Job) -> tuple[bytes, bool]:
        group.answering(job.head.target)
        if job.head.target == "/gate":
            entered.set()
            assert gate.wait(10)  # holds the loop while the test queues more requests
        return answer_head(2) + b"{}", True

    listener = socket.create_server(("127.0.0.1", 0))
    front = FrontEnd(listener, respond, Limits(), timer=timer, group=group)
    thread = threading.Thread(target=front.serve_forever, daemon=True)
    thread.start()
    address = listener.getsockname()
    try:
        for fail in (False, True):
            group.fail = fail
            entered.clear()
            gate.clear()
            holder = socket.create_connection(address, timeout=10)
            holder.sendall(b"GET /gate HTTP/1.1\r\nHost: local\r\n\r\n")
            assert entered.wait(10)  # the loop is answering /gate, alone
            clients = [socket.create_connection(address, timeout=10) for _ in range(3)]
            for n, sock in enumerate(clients):
                sock.sendall(f"GET /c{n} HTTP/1.1\r\nHost: local\r\n\r\n".encode())
            gate.set()  # the loop's next turns accept and read all three before answering
            assert Replies(holder).next()[0] == "HTTP/1.1 200 OK"
            replies = [Replies(sock).next() for sock in clients]
            if fail:  # none of their writes was kept: none may be told it was
                for status, headers, body in replies:
                    assert status == "HTTP/1.1 500 Internal Server Error"
                    assert headers["connection"] == "close"
                    assert_error_body(body, "INTERNAL_ERROR")
            else:
                assert [status for status, _, _ in replies] == ["HTTP/1.1 200 OK"] * 3
            # One block, in arrival order; the request that was ready alone had none.
            assert group.blocks[-1] == ["/c0", "/c1", "/c2"]
            for sock in [holder, *clients]:
                sock.close()
        assert len(group.blocks) == 2
        assert group.alone == ["/gate", "/gate"]
    finally:
        gate.set()
        front.stop()
        thread.join(timeout=10)
        listener.close()
