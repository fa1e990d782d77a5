"""HTTP/1.1 messages as bytes: the head parsed, its limits enforced, responses rendered."""

from __future__ import annotations

import json

import pytest

from localcycles.http.codec import (
    MAX_BODY,
    BadRequest,
    error_response,
    head_end,
    parse_head,
    response,
    trace_id,
)
from localcycles.protocol.errors import LedgerError

TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_the_head_ends_at_the_first_blank_line_crlf_or_bare_lf() -> None:
    crlf, lf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n", b"GET / HTTP/1.1\nA: b\n\n"
    assert head_end(crlf + b"body") == len(crlf)
    assert head_end(lf + b"body") == len(lf)
    assert head_end(crlf + b"body", start=10) == len(crlf)
    assert head_end(b"GET / HTTP/1.1\r\nA: b\r\n") == -1


def test_a_head_is_parsed_with_lower_cased_names_and_repeats_joined() -> None:
    head = parse_head(
        b"POST /v1/x?y=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:  2 \r\nContent-Length: 07\r\n\r\n"
    )
    assert (head.method, head.target, head.content_length) == ("POST", "/v1/x?y=1", 7)
    # RFC 9110 5.3: repeats combine, so a repeated API key is no key rather than the last one.
    assert head.headers["x-a"] == "1, 2" and head.keep_alive


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "keep-alive, close", False),
        ("HTTP/1.1", "closed", True),  # a token, not a substring
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "Keep-Alive", True),
    ],
)
def test_keep_alive_follows_the_version_and_connection_header(
    version: str, connection: str, keep_alive: bool
) -> None:
    raw = f"GET / {version}\r\nHost: h\r\nConnection: {connection}\r\n\r\n".encode()
    assert parse_head(raw).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"GET /\r\n\r\n", 400, "Malformed request line"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n", 400, "Malformed header line"),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            411,
            "Chunked bodies",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n",
            400,
            "Invalid Content-Length",
        ),
        (
            f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
            413,
            "Request body exceeds",
        ),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    ],
)
def test_a_bad_head_is_refused_with_its_status(raw: bytes, status: int, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(raw)
    assert refused.value.error.status == status and words in refused.value.error.message


def test_expect_continue_needs_a_body() -> None:
    ask = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    assert parse_head(ask % 5).expects_continue
    assert not parse_head(ask % 0).expects_continue


def test_the_trace_id_comes_from_traceparent_then_the_cycles_header() -> None:
    parent = f"00-{TRACE}-b7ad6b7169203331-01"
    assert trace_id({"traceparent": parent, "x-cycles-trace-id": "1" * 32}) == TRACE
    assert trace_id({"traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"}) != "0" * 32
    assert trace_id({"x-cycles-trace-id": TRACE}) == TRACE
    fresh = trace_id({"x-cycles-trace-id": "not-hex"})
    assert len(fresh) == 32 and fresh != "not-hex"


def test_an_error_response_is_the_spec_body_in_one_buffer() -> None:
    error = LedgerError(405, "INVALID_REQUEST", "no", {"x": 1}, {"Allow": "GET"})
    data = error_response(error, "req_1", {"x-cycles-trace-id": TRACE}, keep_alive=False)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed"
    assert {"Allow: GET", "Connection: close", f"X-Cycles-Trace-Id: {TRACE}"} <= set(lines)
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {
        "error": "INVALID_REQUEST",
        "message": "no",
        "request_id": "req_1",
        "trace_id": TRACE,
        "details": {"x": 1},
    }


def test_a_kept_alive_response_does_not_say_close() -> None:
    data = response(200, {"ok": "é"}, {}, "req_2", {}, keep_alive=True)
    assert b"Connection: close" not in data
    assert data.endswith('{"ok":"é"}'.encode())


@pytest.mark.parametrize(
    ("raw", "target", "length"),
    [
        # Identical repeats are one length, as h11 reads them (RFC 9112 6.3 allows either).
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "/", 5),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", "/", 5),
        # Absolute-form is served as its path (RFC 9112 3.2.2: a server MUST accept it).
        (b"GET http://h:1/v1/balances?t=a HTTP/1.1\r\nHost: h:1\r\n\r\n", "/v1/balances?t=a", 0),
        (b"GET HTTPS://h?t=a HTTP/1.1\r\nHost: h\r\n\r\n", "/?t=a", 0),
        (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "*", 0),
        # HTTP/1.0 needs no Host; a later 1.x minor is served as 1.1; bare LF line ends.
        (b"GET / HTTP/1.0\r\n\r\n", "/", 0),
        (b"GET / HTTP/1.2\r\nHost: [::1]:8080\r\n\r\n", "/", 0),
        (b"GET / HTTP/1.1\nHost: h\nX-Empty:\n\n", "/", 0),
    ],
)
def test_a_valid_head_in_any_allowed_form_is_accepted(raw: bytes, target: str, length: int) -> None:
    head = parse_head(raw)
    assert (head.target, head.content_length) == (target, length)


def test_field_values_keep_obs_text_and_inner_whitespace_and_lose_the_outer() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nX-Note: \t caf\xe9 \t au lait\t \r\n\r\n")
    assert head.headers["x-note"] == "caf\xe9 \t au lait"
