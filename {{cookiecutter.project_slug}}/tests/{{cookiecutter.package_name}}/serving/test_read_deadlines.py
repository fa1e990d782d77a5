"""A connection's reads keep to the deadline of the request part being read (real sockets;
the deadlines' clock is injected where a test moves past one)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from gunicorn.http.errors import NoMoreData

from {{ cookiecutter.package_name }}.serving import read_deadlines
from {{ cookiecutter.package_name }}.serving.read_deadlines import (
    BodyTimeout,
    HeadTimeout,
    ReadDeadlines,
)


class DeadlineSocket(ReadDeadlines, socket.socket):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(read_deadlines, "time", made)
    return made


@pytest.fixture
def pair() -> Iterator[tuple[DeadlineSocket, socket.socket]]:
    server_side, client_side = socket.socketpair()
    adopted = DeadlineSocket.adopt(server_side)
    assert isinstance(adopted, DeadlineSocket)
    with adopted, client_side:
        yield adopted, client_side


def test_an_idle_connection_is_closed_quietly(
    clock: Clock, pair: tuple[DeadlineSocket, socket.socket]
) -> None:
    server, _ = pair
    server.await_head(idle_s=5, head_s=10)
    clock.now += 5
    with pytest.raises(NoMoreData):  # gunicorn closes such a connection without an answer
        server.recv(1024)
    assert not server.expired


def test_the_heads_clock_starts_at_its_first_bytes(
    clock: Clock, pair: tuple[DeadlineSocket, socket.socket]
) -> None:
    server, client = pair
    server.await_head(idle_s=5, head_s=10)
    clock.now += 4  # idle, within the keep-alive time
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert server.recv(1024) == b"GET / HTTP/1.1\r\n"
    clock.now += 9  # 13 s since the wait began, 9 s into the head
    client.sendall(b"Host: x\r\n")
    assert server.recv(1024) == b"Host: x\r\n"
    clock.now += 1
    with pytest.raises(HeadTimeout):
        server.recv(1024)
    assert server.expired


def test_a_body_past_its_deadline_closes_the_connection(
    clock: Clock, pair: tuple[DeadlineSocket, socket.socket]
) -> None:
    server, client = pair
    request = SimpleNamespace(must_close=False)
    server.await_body(body_s=30, request=request)
    client.sendall(b'{"prompt": ')
    assert server.recv(1024) == b'{"prompt": '
    clock.now += 30
    with pytest.raises(BodyTimeout) as caught:
        server.recv(1024)
    assert caught.value.code == 408  # the app answers it as any HTTP error: 408 JSON
    assert request.must_close, "the answer says Connection: close"


def test_no_deadline_after_the_request(
    clock: Clock, pair: tuple[DeadlineSocket, socket.socket]
) -> None:
    server, client = pair
    server.await_body(body_s=1, request=None)
    server.no_deadline()
    clock.now += 3600
    client.sendall(b"rest")
    assert server.recv(1024) == b"rest"


def test_a_client_that_stops_sending_is_cut_at_the_deadline(
    pair: tuple[DeadlineSocket, socket.socket],
) -> None:
    """On the real clock: the read waits no longer than what is left of the deadline."""
    server, client = pair
    server.await_head(idle_s=30, head_s=0.2)
    client.sendall(b"GET / HT")
    assert server.recv(1024) == b"GET / HT"
    with pytest.raises(HeadTimeout):
        server.recv(1024)  # nothing more comes
    assert server.gettimeout() is None, "the socket's own timeout is given back"


def test_the_callers_own_shorter_timeout_stays_its_own(
    pair: tuple[DeadlineSocket, socket.socket],
) -> None:
    """gunicorn bounds some reads itself (draining an unread body): its timeout is not a
    request deadline."""
    server, _ = pair
    server.await_body(body_s=600, request=None)
    server.settimeout(0.05)
    with pytest.raises(TimeoutError) as caught:
        server.recv(1024)
    assert not isinstance(caught.value, BodyTimeout) and not server.expired
    assert server.gettimeout() == 0.05


def test_adopting_keeps_the_connection_and_its_timeout() -> None:
    server_side, client_side = socket.socketpair()
    server_side.settimeout(0.0)
    adopted = DeadlineSocket.adopt(server_side)
    with adopted, client_side:
        assert server_side.fileno() == -1, "one owner of the descriptor"
        assert adopted.gettimeout() == 0.0
        client_side.sendall(b"x")
        assert adopted.recv(1) == b"x"
