"""HTTP/1.1 messages of the local server as bytes in, bytes out: no sockets, no threads.

Only the subset of HTTP/1.1 that API clients use: a request head, a Content-Length body
(chunked bodies are refused), keep-alive and ``Expect: 100-continue``. Every response is one
buffer (head and body together), so it leaves in one ``send``. The connection handling lives
in ``front``.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from typing import Any

from ..protocol.errors import LedgerError

MAX_BODY = 1024 * 1024
MAX_LINE = 8192
MAX_HEADERS = 100
#: A whole request head (request line and headers). Larger heads are refused with 431, so a
#: client can make the server buffer at most this much before its body.
MAX_HEAD = 64 * 1024

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Request and trace ids only need to be unique, not secret: a Mersenne Twister seeded from
# os.urandom costs no system call per request.
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat ids
REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


class BadRequest(Exception):
    """A request the stream cannot recover from: answer with ``error``, then close."""

    def __init__(self, error: LedgerError, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers or {}  # the request's headers when known (for its trace id)


@dataclass
class Head:
    """A parsed request head."""

    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; the last occurrence of a name wins
    keep_alive: bool
    content_length: int

    @property
    def expects_continue(self) -> bool:
        return self.content_length > 0 and (
            self.headers.get("expect", "").lower() == "100-continue"
        )


def new_request_id() -> str:
    return f"req_{_ids.getrandbits(96):024x}"


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Index just past the blank line that ends the head in ``buffer``, or -1.

    ``start`` lets a caller resume the search where the previous one stopped, so a client
    that sends its head a byte at a time does not make the server rescan the whole buffer.
    Bare ``\\n`` line ends are accepted, as the stdlib server does.
    """
    crlf = buffer.find(b"\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    if lf != -1 and (crlf == -1 or lf < crlf):
        return lf + 2
    return crlf + 3 if crlf != -1 else -1


def check_partial_head(buffer: bytes | bytearray) -> None:
    """Refuse a head that is still incomplete but already too long to be accepted."""
    first_line_end = buffer.find(b"\n")
    if (first_line_end == -1 and len(buffer) > MAX_LINE) or first_line_end > MAX_LINE:
        raise BadRequest(LedgerError(414, "INVALID_REQUEST", "Request line too long"))
    if len(buffer) > MAX_HEAD:
        raise BadRequest(LedgerError(431, "INVALID_REQUEST", "Request head too large"))


def parse_head(raw: bytes) -> Head:
    """Parse a complete head (the bytes up to and including its blank line)."""
    lines = raw.decode("latin-1").split("\n")
    if len(lines[0]) > MAX_LINE:
        raise BadRequest(LedgerError(414, "INVALID_REQUEST", "Request line too long"))
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(LedgerError(400, "INVALID_REQUEST", "Malformed request line"))
    method, target, version = parts
    headers: dict[str, str] = {}
    for count, raw_line in enumerate(lines[1:], start=1):
        line = raw_line.rstrip("\r")
        if not line:
            break
        if count > MAX_HEADERS:
            raise BadRequest(LedgerError(431, "INVALID_REQUEST", "Too many headers"))
        if len(line) > MAX_LINE:
            raise BadRequest(LedgerError(431, "INVALID_REQUEST", "Header line too long"))
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(LedgerError(400, "INVALID_REQUEST", "Malformed header line"))
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = (version == "HTTP/1.1" and "close" not in connection) or (
        version == "HTTP/1.0" and "keep-alive" in connection
    )
    try:
        length = _content_length(headers)
    except BadRequest as exc:
        exc.headers = headers
        raise
    return Head(method, target, headers, keep_alive, length)


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest(
            LedgerError(
                411, "INVALID_REQUEST", "Chunked bodies are not supported; send Content-Length"
            )
        )
    raw = headers.get("content-length")
    if raw is None:
        return 0
    # ASCII digits only: str.isdigit() also accepts other scripts' digits, and int() of
    # thousands of digits raises; neither may become a 500.
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(LedgerError(400, "INVALID_REQUEST", "Invalid Content-Length"))
    digits = raw.lstrip("0")
    if len(digits) > len(str(MAX_BODY)) or int(digits or "0") > MAX_BODY:
        # Refused before reading; the unread body makes the connection unusable.
        raise BadRequest(
            LedgerError(413, "INVALID_REQUEST", f"Request body exceeds {MAX_BODY} bytes")
        )
    return int(digits or "0")


def trace_id(headers: dict[str, str]) -> str:
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


def error_response(
    error: LedgerError, request_id: str, headers: dict[str, str], keep_alive: bool
) -> bytes:
    """The spec's error body ``{error, message, request_id, trace_id[, details]}``."""
    body: dict[str, Any] = {
        "error": error.code,
        "message": error.message,
        "request_id": request_id,
        "trace_id": trace_id(headers),
    }
    if error.details:
        body["details"] = error.details
    return response(error.status, body, error.headers, request_id, headers, keep_alive)


def response(
    status: int,
    payload: dict[str, Any],
    extra: dict[str, str],
    request_id: str,
    headers: dict[str, str],
    keep_alive: bool,
) -> bytes:
    """A whole response, head and JSON body, as one buffer."""
    data = _encode(payload).encode("utf-8")
    trace = payload.get("trace_id") if status >= 400 else trace_id(headers)
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        f"X-Request-Id: {request_id}",
        f"X-Cycles-Trace-Id: {trace}",
    ]
    lines.extend(f"{name}: {value}" for name, value in extra.items())
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
