"""The head parser against h11 as an oracle: whatever h11 refuses, the codec refuses.

h11 is a strict, widely used HTTP/1.1 parser; a head it refuses is one some parser in front
of the server may read differently (request smuggling). The codec is stricter still in a few
places (obs-fold, control characters, Transfer-Encoding with Content-Length, HTTP/2.0 in an
HTTP/1 request line, targets that are not paths), so the oracle runs one way; well-formed
heads, in turn, must be accepted by both and read the same.
"""

from __future__ import annotations

import string

import h11
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from localcycles.http.codec import MAX_HEAD, BadRequest, Head, head_end, parse_head


def post(*fields: bytes, line: bytes = b"POST / HTTP/1.1", host: bytes = b"Host: h") -> bytes:
    """A head: the request line, Host (unless empty), then ``fields``, one per line."""
    lines = [line, *([host] if host else []), *fields]
    return b"".join(part + b"\r\n" for part in lines) + b"\r\n"


# The crafted heads: (head, words of the codec's 400 message, does h11 refuse it too).
CRAFTED = [
    # The list: two Content-Length values, space before the colon, obs-fold, NUL in
    # a name, CR inside a value, HTTP/1.1 without Host.
    (post(b"Content-Length: 0", b"Content-Length: 7"), "Conflicting Content-Length", True),
    (post(b"Content-Length: 0, 7"), "Conflicting Content-Length", True),
    (post(b"Content-Length : 7"), "Whitespace before the colon", True),
    (post(b"Content-Length\t: 7"), "Whitespace before the colon", True),
    (post(b"X-A: a", b" Content-Length: 7"), "Obsolete line folding", False),
    (post(b"\tHost: h", host=b""), "Obsolete line folding", True),
    (post(b"X-A\x00: a"), "header name", True),
    (post(b"X-A: a\rb"), "value of header 'X-A'", True),
    (post(b"X-A: a\r"), "value of header 'X-A'", True),
    (post(host=b""), "Missing Host", True),
    # More framing: both framings at once, a second Host, a sign or a space in a length.
    (post(b"Transfer-Encoding: chunked", b"Content-Length: 7"), "Content-Length together", False),
    (post(b"Transfer-Encoding: chunked, gzip"), "must end with chunked", True),
    (post(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0", host=b""), "HTTP/1.0", False),
    (post(b"Host: h"), "More than one Host", True),
    (post(host=b"Host: a b"), "Invalid Host", False),
    (post(b"Content-Length: +7"), "Invalid Content-Length", True),
    (post(b"Content-Length: 7 7"), "Invalid Content-Length", True),
    # Field values: controls other than HTAB, DEL; a field without a name.
    (post(b"X-A: a\x0bb"), "value of header", True),
    (post(b"X-A: a\x01b"), "value of header", False),
    (post(b"X-A: a\x7f"), "value of header", False),
    (post(b": a"), "header name", True),
    # Request line: one SP between its parts, a token method, a visible target, a version.
    (post(line=b"GET  / HTTP/1.1"), "Malformed request line", True),
    (post(line=b"GET / HTTP/1.1 "), "Malformed request line", True),
    (post(line=b"GET\t/ HTTP/1.1"), "Malformed request line", True),
    (post(line=b"G(T / HTTP/1.1"), "Malformed request line", True),
    (post(line=b"GET /\x80 HTTP/1.1"), "Malformed request line", True),
    (post(line=b"GET / http/1.1"), "Malformed request line", True),
    (post(line=b"GET / HTTP/1"), "Malformed request line", True),
    (b"\r\n" + post(), "Malformed request line", True),
    (post(line=b"GET /a#b HTTP/1.1"), "Malformed request target", False),
    (post(line=b"CONNECT h:443 HTTP/1.1"), "Malformed request target", False),
]
NEVER = [raw for raw, _, h11_refuses in CRAFTED if h11_refuses]


def h11_reads(raw: bytes) -> h11.Request | None:
    """h11's reading of the head at the start of ``raw``, or None if h11 refuses it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request), f"not a complete head: {raw!r} -> {event!r}"
    return event


def codec_reads(raw: bytes) -> Head | None:
    """The codec's reading of the head at the start of ``raw``, or None if it refuses it."""
    end = head_end(raw)
    assert end != -1, f"not a complete head: {raw!r}"
    try:
        return parse_head(raw[:end])
    except BadRequest as refused:
        assert 400 <= refused.error.status < 500 or refused.error.status == 505, refused.error
        return None


@pytest.mark.parametrize(("raw", "words", "h11_refuses"), CRAFTED)
def test_each_crafted_head_is_refused_with_a_400_that_says_why(
    raw: bytes, words: str, h11_refuses: bool
) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_head(raw[: head_end(raw)])
    assert refused.value.error.status == 400 and refused.value.error.code == "INVALID_REQUEST"
    assert words in refused.value.error.message
    # The table says truly where the codec is stricter than h11.
    assert (h11_reads(raw) is None) is h11_refuses


# ---------------------------------------------------------------- generated heads

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
# Bytes that parsers disagree about: NUL, CR, LF, other controls, DEL, obs-text, separators.
NASTY = '\x00\r\n\t \x01\x0b\x0c\x7f\x80\xe9\xff:,;"()/@[]?=#'
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))


# Each part of a head: what a client plausibly sends, and what an attacker might.
PARTS: dict[str, tuple[list[str], st.SearchStrategy[str]]] = {
    "method": (["GET", "POST", "OPTIONS", "get"], st.text(TCHARS + NASTY, max_size=8)),
    "target": (
        ["/", "/v1/reservations", "/v1/balances?tenant=acme", "http://h/x", "HTTPS://h?q"],
        st.one_of(
            st.sampled_from(["*", "h:443", "/a#b", "//x", "/a b", "/\x7f", "/\xe9", ""]),
            st.text(VISIBLE + NASTY, max_size=12),
        ),
    ),
    "version": (
        ["HTTP/1.1", "HTTP/1.0"],
        st.sampled_from(
            ["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/11", "HTTP/1", "HTTP/1.1 ",
             " HTTP/1.1", "HTTP/1.1\r"]
        ),
    ),
    "space": ([" "], st.sampled_from(["  ", "\t", " \t"])),
    "name": (
        ["Host", "Content-Length", "content-length", "Transfer-Encoding", "Connection",
         "Expect", "X-Cycles-API-Key", "X-Idempotency-Key"],
        st.text(TCHARS + NASTY, max_size=10),
    ),
    "colon": ([":", ": ", ":\t", ":  "], st.sampled_from([" :", " : ", "\t:", "::"])),
    "value": (
        ["5", "0", "05", "5, 5", "5, 6", "5,", "-1", "+5", "5 5", "99999999999999999999999",
         "chunked", "gzip, chunked", "chunked, gzip", "identity", "close", "keep-alive",
         "100-continue", "localhost", "127.0.0.1:8080", "[::1]:80", "a b", ""],
        st.text(VISIBLE + NASTY, max_size=16),
    ),
    "host": (
        ["Host: local", "Host: 127.0.0.1:80", "host:h"],
        st.sampled_from(["", "Host:", "Host: a\r\nHost: b", "Host: a b"]),
    ),
    "end": (["\r\n"], st.just("\n")),
}  # fmt: skip


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head that goes wrong in a few places at most, so that the checks past the
    request line are reached too; an obs-fold continuation line now and then."""
    broken = set(draw(st.lists(st.sampled_from(sorted(PARTS)), max_size=3)))

    def part(name: str) -> str:
        plausible, nasty = PARTS[name]
        return draw(nasty if name in broken else st.sampled_from(plausible))

    space = part("space")
    line = space.join([part("method"), part("target"), part("version")])
    fields = [part("name") + part("colon") + part("value") for _ in range(draw(st.integers(0, 4)))]
    if draw(st.integers(0, 9)) == 0:
        fields.append(draw(st.sampled_from([" ", "\t"])) + part("value"))
    host = part("host")
    fields = draw(st.permutations([host, *fields] if host else fields))
    text = line + "".join(part("end") + field for field in fields) + "\r\n\r\n"
    return text.encode("latin-1")


@given(raw=st.one_of(heads(), st.sampled_from(NEVER)))
@example(raw=b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
def test_whatever_h11_refuses_the_codec_refuses(raw: bytes) -> None:
    if h11_reads(raw) is None:
        assert codec_reads(raw) is None, f"h11 refuses, the codec accepts: {raw!r}"
    else:
        codec_reads(raw)  # accepted or refused, never an error other than a 4xx/505


# ---------------------------------------------------------------- well-formed heads

# RFC 3986 characters a client sends unencoded in a path and query, percent signs included.
PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%"
FIELD_VCHARS = VISIBLE + "".join(chr(c) for c in range(0x80, 0x100))
SPECIAL = {"host", "content-length", "transfer-encoding"}

# Words of field characters with SP/HTAB between them (never at either end).
good_values = st.lists(
    st.tuples(st.text(FIELD_VCHARS, min_size=1, max_size=8), st.sampled_from([" ", "\t", " \t "])),
    max_size=3,
).map(lambda parts: "".join(word + gap for word, gap in parts).rstrip(" \t"))
good_fields = st.tuples(
    st.text(TCHARS, min_size=1, max_size=10).filter(lambda name: name.lower() not in SPECIAL),
    st.sampled_from(["", " ", "\t", "  "]),
    good_values,
    st.sampled_from(["", " ", "\t"]),
)


@st.composite
def good_heads(draw: st.DrawFn) -> bytes:
    """A well-formed head, as a careful client sends it."""
    method = draw(st.text(TCHARS, min_size=1, max_size=8))
    target = "/" + draw(st.text(PATH_CHARS, max_size=20))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    lines = [
        f"{name}:{lead}{value}{trail}"
        for name, lead, value, trail in draw(st.lists(good_fields, max_size=6))
    ]
    if version == "1.1" or draw(st.booleans()):
        host = draw(
            st.sampled_from(["h", "127.0.0.1:8080", "[::1]:80", "xn--bcher-kva.example", ""])
        )
        lines.insert(draw(st.integers(0, len(lines))), f"Host: {host}")
    length = draw(st.integers(0, 10**6))
    for _ in range(draw(st.integers(0, 2))):  # identical repeats are allowed
        lines.insert(draw(st.integers(0, len(lines))), f"Content-Length: {length}")
    end = draw(st.sampled_from(["\r\n", "\n"]))
    text = f"{method} {target} HTTP/{version}{end}" + "".join(line + end for line in lines)
    return (text + end).encode("latin-1")


@given(raw=good_heads())
def test_a_well_formed_head_is_accepted_by_both_and_read_the_same(raw: bytes) -> None:
    theirs, ours = h11_reads(raw), codec_reads(raw)
    assert theirs is not None and ours is not None, raw
    assert (ours.method, ours.target) == (theirs.method.decode(), theirs.target.decode())
    expected: dict[str, list[str]] = {}
    for name, value in theirs.headers:
        if name != b"content-length":  # h11 keeps one of identical repeats, the codec joins
            expected.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    joined = {name: ", ".join(found) for name, found in expected.items()}
    assert {k: v for k, v in ours.headers.items() if k != "content-length"} == joined
    declared = [int(value) for name, value in theirs.headers if name == b"content-length"]
    assert ours.content_length == (declared[0] if declared else 0)
