"""Server-sent events on the wire, and which connections can be cut from another thread."""

from __future__ import annotations

import json
import socket

from hypothesis import example, given
from hypothesis import strategies as st

from {{ cookiecutter.package_name }}.web import sse


def test_an_event_names_itself_in_its_data() -> None:
    frame = sse.event("delta", {"text": "Hé\nllo"})
    name, data, end = frame.decode().split("\n", 2)
    assert name == "event: delta" and end == "\n"
    assert json.loads(data.removeprefix("data: ")) == {"type": "delta", "text": "Hé\nllo"}


@given(st.text())
@example('"\\\n\x00é\ud800')  # a lone surrogate, as a provider's JSON may escape one
def test_a_delta_event_is_the_general_event_byte_for_byte(text: str) -> None:
    # Any text: quotes, backslashes, control characters, non-ASCII.
    assert sse.delta(text) == sse.event("delta", {"text": text})


def test_a_stream_is_not_buffered_by_proxies() -> None:
    response = sse.response([sse.event("done", {})])
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"


def test_only_an_http1_socket_of_the_server_can_be_cut() -> None:
    left, right = socket.socketpair()
    try:
        assert sse.connection_cutter({}) is None
        assert sse.connection_cutter({"werkzeug.socket": left, "SERVER_PROTOCOL": "HTTP/2"}) is None
        cut = sse.connection_cutter({"gunicorn.socket": left, "SERVER_PROTOCOL": "HTTP/1.1"})
        assert cut is not None
        cut()
        assert right.recv(1) == b""  # the peer sees the connection end
        cut()  # cutting twice is harmless
    finally:
        left.close()
        right.close()
