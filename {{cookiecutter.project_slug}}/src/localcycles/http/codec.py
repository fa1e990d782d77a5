"""HTTP/1.1 messages of the local server as bytes in, bytes out: no sockets, no threads.

Only the subset of HTTP/1.1 that API clients use: a request head, a Content-Length body
(chunked bodies are refused), keep-alive and ``Expect: 100-continue``. The head is parsed
strictly (RFC 9112): whatever two parsers could read differently, a proxy in front and this
server, is refused (400 unless a more precise status applies) and the connection closed,
never guessed at. Every response is one buffer (head and body together), so it leaves in one
``send``. The connection handling lives in ``front``.
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

# RFC 9110 5.6.2: token = 1*tchar (methods and field names).
_TCHAR = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(f"{_TCHAR}+")
# RFC 9112 3: method SP request-target SP HTTP-version, one space each; the target is visible
# ASCII (its form is checked after).
_REQUEST_LINE = re.compile(rf"({_TCHAR}+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
# RFC 9112 5 and RFC 9110 5.5: name ":" OWS value OWS; no space before the colon, and the
# value is visible characters, obs-text, SP and HTAB only (no CR, LF, NUL or other controls).
_FIELD_LINE = re.compile(rf"{_TCHAR}+:[\t\x20-\x7e\x80-\xff]*")
# The same for every line of a head at once. Possessive: a bad last line of a 64 KB head
# must not make the match retry every earlier line (that took milliseconds).
_FIELD_BLOCK = re.compile(rf"(?:{_TCHAR}++:[\t\x20-\x7e\x80-\xff]*+\r?(?:\n|$))*+")
# RFC 9110 7.2: uri-host [":" port]; empty is allowed (a target without an authority).
_HOST = re.compile(r"(?:\[[0-9A-Za-z:.%_~-]+\]|[-A-Za-z0-9._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_ABSOLUTE_FORM = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
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
    505: "HTTP Version Not Supported",
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
    headers: dict[str, str]  # lower-cased names; repeated names joined with ", "
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
    """Parse a complete head (the bytes up to and including its blank line).

    Strict where RFC 9112 lets a server choose, because a proxy in front may have read the
    same bytes differently (request smuggling): anything h11 refuses is refused here too
    (tests/localcycles/http/test_codec_oracle.py), plus obs-fold and Transfer-Encoding.
    """
    end = head_end(raw)
    lines = raw[: end if end != -1 else len(raw)].decode("latin-1").split("\n")
    request_line = lines[0].removesuffix("\r")
    if len(request_line) > MAX_LINE:
        raise BadRequest(LedgerError(414, "INVALID_REQUEST", "Request line too long"))
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise _bad("Malformed request line")
    method, target, major, minor = match.groups()
    if major != "1":
        raise _bad(f"HTTP/{major}.{minor} is not supported; use HTTP/1.1", 505)
    headers, repeated = _fields(lines[1:])
    http11 = minor != "0"  # a later 1.x minor is served as 1.1 (RFC 9110 2.5)
    try:
        _check_host(headers, repeated, http11)
        length = _content_length(headers, http11)
        target = _origin_form(method, target)
    except BadRequest as exc:
        exc.headers = headers
        raise
    connection = {token.strip(" \t").lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    return Head(method, target, headers, keep_alive, length)


def _bad(message: str, status: int = 400) -> BadRequest:
    return BadRequest(LedgerError(status, "INVALID_REQUEST", message))


def _fields(lines: list[str]) -> tuple[dict[str, str], set[str]]:
    """The field lines up to the blank one: lower-cased name -> value, and the repeated names.

    RFC 9110 5.3: repeated field lines combine into one comma-separated value, so a repeated
    single-valued header (an API key) is invalid instead of one copy winning.
    """
    while lines and lines[-1] in ("", "\r"):  # the blank line that ends the head
        lines.pop()
    if len(lines) > MAX_HEADERS:
        raise BadRequest(LedgerError(431, "INVALID_REQUEST", "Too many headers"))
    if lines and max(map(len, lines)) > MAX_LINE + 1:  # + 1: the line's CR
        raise BadRequest(LedgerError(431, "INVALID_REQUEST", "Header line too long"))
    # One match for the whole block (the common case), a line at a time only to say why not.
    if not _FIELD_BLOCK.fullmatch("\n".join(lines)):
        for line in lines:
            if not _FIELD_LINE.fullmatch(line.removesuffix("\r")):
                raise _bad(_field_line_problem(line.removesuffix("\r")))
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for line in lines:
        raw_name, _, raw_value = line.partition(":")
        name, value = raw_name.lower(), raw_value.strip(" \t\r")
        if name in headers:
            headers[name] += ", " + value
            repeated.add(name)
        else:
            headers[name] = value
    return headers, repeated


def _field_line_problem(line: str) -> str:
    """Why ``line`` is not a field line, in words that name the header when it has a name."""
    if line[:1] in (" ", "\t"):  # RFC 9112 5.2: a server may refuse obs-fold; unfolding is a guess
        return "Obsolete line folding (a header line starting with whitespace) is not accepted"
    name, colon, _ = line.partition(":")
    if not colon:
        return "Malformed header line"
    if _TOKEN.fullmatch(name.rstrip(" \t")) and name != name.rstrip(" \t"):
        return f"Whitespace before the colon in header {name.strip()[:64]!r}"
    if not _TOKEN.fullmatch(name):
        return "Invalid character in a header name"
    return f"Invalid character in the value of header {name[:64]!r}"


def _check_host(headers: dict[str, str], repeated: set[str], http11: bool) -> None:
    """RFC 9112 3.2: exactly one valid Host in HTTP/1.1, at most one in HTTP/1.0."""
    if "host" in repeated:
        raise _bad("More than one Host header")
    host = headers.get("host")
    if host is None and http11:
        raise _bad("Missing Host header (required in HTTP/1.1)")
    if host is not None and not _HOST.fullmatch(host):
        raise _bad("Invalid Host header")


def _origin_form(method: str, target: str) -> str:
    """The target as a path and query; absolute-form is accepted (RFC 9112 3.2.2)."""
    if "#" not in target:
        if target.startswith("/") or (target == "*" and method == "OPTIONS"):
            return target
        absolute = _ABSOLUTE_FORM.match(target)
        if absolute:
            rest = target[absolute.end() :]
            return rest if rest.startswith("/") else "/" + rest
    raise _bad("Malformed request target: expected a path such as /v1/reservations")


def _content_length(headers: dict[str, str], http11: bool) -> int:
    """The body length, from Content-Length only (RFC 9112 6.3)."""
    lengths = headers.get("content-length")
    if "transfer-encoding" in headers:
        # Which of the two framings a proxy in front used is unknowable: refuse both together.
        if lengths is not None:
            raise _bad("Transfer-Encoding and Content-Length together are not accepted")
        if not http11:
            raise _bad("Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if headers["transfer-encoding"].rsplit(",", 1)[-1].strip(" \t").lower() != "chunked":
            raise _bad("Transfer-Encoding must end with chunked")
        raise BadRequest(
            LedgerError(
                411, "INVALID_REQUEST", "Chunked bodies are not supported; send Content-Length"
            )
        )
    if lengths is None:
        return 0
    # Repeats of one value ("5, 5" or two lines of 5) are one length, as h11 reads them;
    # different values are the classic smuggling request.
    values = {value.strip(" \t") for value in lengths.split(",")}
    if len(values) != 1:
        raise _bad("Conflicting Content-Length values")
    raw = values.pop()
    # ASCII digits only: str.isdigit() also accepts other scripts' digits, and int() of
    # thousands of digits raises; neither may become a 500.
    if not (raw.isascii() and raw.isdigit()):
        raise _bad("Invalid Content-Length")
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
    # 204 No Content has no body (the admin API's DELETE answers).
    data = b"" if status == 204 else _encode(payload).encode("utf-8")
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
