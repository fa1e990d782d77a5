"""Inputs an attacker would try: each gets a 4xx JSON error, never a 500, and changes nothing.

The property tests send arbitrary request lines, headers, query strings and bodies (raw
bytes and JSON shaped like each endpoint's) and check after every request that the answer is
well-formed HTTP with a JSON body, the status is below 500, and the ledger still balances.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localcycles import LocalCyclesServer, LocalLedger
from support.localcycles_kit import (
    LC_ADMIN_KEY,
    LC_TENANT,
    LC_UNIT,
    assert_ledger_invariants,
    ledger_state,
    reservation_body,
)

ERROR_FIELDS = {"error", "message", "request_id", "trace_id"}
STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) [^\r\n]*$")
ARABIC_ONE = "\u0661"  # a digit to str.isdigit() and int(), but not ASCII


class Ledgered:
    """A server with two budgets, a live reservation and the keys to reach them."""

    def __init__(self, server: LocalCyclesServer) -> None:
        self.server = server
        ledger: LocalLedger = server.ledger
        ledger.create_tenant(LC_TENANT)
        self.key = ledger.create_api_key(LC_TENANT)
        ledger.set_budget("tenant:acme", allocated=1_000_000)
        ledger.set_budget("tenant:acme/workspace:prod", allocated=500_000, overdraft_limit=1_000)
        reply = self.request(
            "POST", "/v1/reservations", {"X-Cycles-API-Key": self.key}, body(reservation_body(7))
        )
        self.reservation_id = str(json.loads(reply[1])["reservation_id"])

    @property
    def ledger(self) -> LocalLedger:
        return self.server.ledger

    def exchange(self, raw: bytes) -> bytes:
        """Send raw bytes and read the answer until the server closes the connection."""
        with socket.create_connection((self.server.host, self.server.port), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def request(
        self, method: str, target: str, headers: dict[str, str], payload: bytes
    ) -> tuple[int, bytes]:
        head = f"{method} {target} HTTP/1.1\r\nHost: local\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += f"Content-Length: {len(payload)}\r\n\r\n"
        return parse_answer(self.exchange(head.encode() + payload))


def body(value: Any) -> bytes:
    # ensure_ascii: a lone surrogate becomes the escape "\ud800", as an attacker would send.
    return json.dumps(value, ensure_ascii=True).encode()


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the interim answer to Expect: 100-continue


def parse_answer(reply: bytes) -> tuple[int, bytes]:
    """(status, body) of the first answer; every answer in ``reply`` must be well-formed.

    More than one answer arrives when the bytes sent held more than one request (a body
    shorter than its Content-Length says leaves the rest to be read as the next request).
    """
    answers = []
    while reply:
        status, payload, reply = _one_answer(reply)
        answers.append((status, payload))
    assert answers, "no answer"
    assert all(status < 500 for status, _ in answers), answers
    return answers[0]


def _one_answer(reply: bytes) -> tuple[int, bytes, bytes]:
    """(status, body, rest) of one HTTP/1.1 answer with a JSON object body."""
    reply = reply.removeprefix(CONTINUE)
    head, sep, payload = reply.partition(b"\r\n\r\n")
    assert sep, f"no complete answer: {reply[:200]!r}"
    lines = head.split(b"\r\n")
    match = STATUS_LINE.match(lines[0])
    assert match, lines[0]
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        assert colon, line
        headers[name.strip().lower()] = value.strip()
    assert headers[b"content-type"] == b"application/json"
    length = int(headers[b"content-length"])
    assert len(payload) >= length
    payload, rest = payload[:length], payload[length:]
    parsed = json.loads(payload)
    assert isinstance(parsed, dict)
    status = int(match.group(1))
    if status >= 400:
        assert set(parsed) >= ERROR_FIELDS, parsed
    return status, payload, rest


@pytest.fixture
def target(lc_server: LocalCyclesServer) -> Ledgered:
    return Ledgered(lc_server)


def assert_refused_and_unchanged(target: Ledgered, raw: bytes) -> dict[str, Any]:
    before = ledger_state(target.ledger)
    status, payload = parse_answer(target.exchange(raw))
    assert 400 <= status < 500, payload
    assert ledger_state(target.ledger) == before
    return dict(json.loads(payload))


# ---------------------------------------------------------------------- the reported inputs


@pytest.mark.parametrize(
    "length", [ARABIC_ONE * 2, "²", "1" * 5000, "9" * 40, "-1", "1 2", "0x10", ""]
)
def test_a_malformed_content_length_is_4xx(target: Ledgered, length: str) -> None:
    head = (
        "POST /v1/reservations HTTP/1.1\r\nHost: x\r\nX-Cycles-API-Key: "
        f"{target.key}\r\nContent-Length: {length}\r\n\r\n"
    )
    assert_refused_and_unchanged(target, head.encode() + body(reservation_body(1)))


HOSTILE_QUERIES = [
    "limit=" + "9" * 5000,
    "limit=" + quote("²"),
    "limit=" + quote(ARABIC_ONE),
    "cursor=" + base64.urlsafe_b64encode(b"[" * 5000).decode(),
    "cursor=" + base64.urlsafe_b64encode(b'{"o":' + b"[" * 900 + b"]" * 900 + b"}").decode(),
    "cursor=" + base64.urlsafe_b64encode(b'{"o": 99999999999999999999999, "f": "x"}').decode(),
    "cursor=" + base64.urlsafe_b64encode(b'{"after": ["\\ud800", "x"]}').decode(),
    "cursor=" + base64.urlsafe_b64encode(b'{"o": true}').decode(),
    "cursor=" + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "cursor=" + "A" * 5000,
]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        *(("/v1/reservations", query) for query in HOSTILE_QUERIES),
        *(("/v1/balances", query) for query in HOSTILE_QUERIES),
        ("/v1/reservations", "from=" + "9" * 5000),
        ("/v1/reservations", "from=99999-01-01"),
        ("/v1/reservations", "to=" + quote("2030-01-01T00:00:00+99:00")),
    ],
)
def test_hostile_query_parameters_are_4xx(target: Ledgered, path: str, query: str) -> None:
    separator = "&" if path == "/v1/balances" else ""
    prefix = "tenant=acme" if path == "/v1/balances" else ""
    before = ledger_state(target.ledger)
    status, payload = target.request(
        "GET", f"{path}?{prefix}{separator}{query}", {"X-Cycles-API-Key": target.key}, b""
    )
    assert status == 400 and json.loads(payload)["error"] == "INVALID_REQUEST", payload
    assert ledger_state(target.ledger) == before


def surrogate_bodies(target: Ledgered) -> list[tuple[str, dict[str, Any]]]:
    rid = target.reservation_id
    lone = "a\ud800b"
    return [
        ("/v1/reservations", reservation_body(1, key=lone)),
        ("/v1/reservations", {**reservation_body(1), "action": {"kind": lone, "name": "x"}}),
        ("/v1/reservations", {**reservation_body(1), "action": {"kind": "k", "name": lone}}),
        ("/v1/reservations", {**reservation_body(1), "metadata": {lone: 1}}),
        ("/v1/reservations", {**reservation_body(1), "metadata": {"note": [lone]}}),
        ("/v1/decide", reservation_body(1, key=lone)),
        (f"/v1/reservations/{rid}/commit",
         {"idempotency_key": "c", "actual": {"unit": LC_UNIT, "amount": 1},
          "metrics": {"model_version": lone}}),
        (f"/v1/reservations/{rid}/release", {"idempotency_key": "r", "reason": lone}),
        (f"/v1/reservations/{rid}/extend", {"idempotency_key": lone, "extend_by_ms": 1000}),
        ("/v1/events", {**{k: v for k, v in reservation_body(1).items() if k != "estimate"},
                        "actual": {"unit": LC_UNIT, "amount": 1}, "idempotency_key": lone}),
    ]  # fmt: skip


def test_a_lone_surrogate_in_any_string_field_is_400(target: Ledgered) -> None:
    for path, payload in surrogate_bodies(target):
        raw = body(payload)
        assert b"\\ud800" in raw
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"X-Cycles-API-Key: {target.key}\r\nContent-Length: {len(raw)}\r\n\r\n"
        )
        answer = assert_refused_and_unchanged(target, head.encode() + raw)
        assert answer["error"] == "INVALID_REQUEST", (path, answer)


ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
FUND = f"/v1/admin/budgets/fund?scope=tenant:acme&unit={LC_UNIT}"


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/reservations", {**reservation_body(1), "estimate": {"unit": LC_UNIT, "amount": None}}),  # noqa: E501
        ("/v1/reservations", {**reservation_body(1), "estimate": None}),
        ("/v1/events", {**reservation_body(1), "actual": {"unit": LC_UNIT, "amount": None}}),
        (FUND, {"operation": "CREDIT", "amount": {"unit": LC_UNIT, "amount": None}}),
        (FUND, {"operation": None, "amount": {"unit": LC_UNIT, "amount": 1}}),
        (FUND, {"operation": "RESET_SPENT", "amount": {"unit": LC_UNIT, "amount": 1},
                "spent": {"unit": LC_UNIT, "amount": None}}),
        ("/v1/admin/budgets", {"scope": "tenant:acme/app:x", "unit": LC_UNIT,
                               "allocated": {"unit": LC_UNIT, "amount": None}}),
        ("/v1/admin/budgets", {"scope": None, "unit": LC_UNIT,
                               "allocated": {"unit": LC_UNIT, "amount": 1}}),
        ("/v1/admin/tenants", {"tenant_id": None}),
        ("/v1/admin/api-keys", {"tenant_id": "acme", "name": "n", "key_secret": "k\ud800" * 8}),
    ],
)  # fmt: skip
def test_null_amounts_and_fields_are_400(
    target: Ledgered, path: str, payload: dict[str, Any]
) -> None:
    raw = body(payload)
    auth = (
        f"X-Admin-API-Key: {LC_ADMIN_KEY}"
        if path.startswith("/v1/admin/")
        else (f"X-Cycles-API-Key: {target.key}")
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    answer = assert_refused_and_unchanged(target, head.encode() + raw)
    assert answer["error"] == "INVALID_REQUEST", answer


def test_deeply_nested_json_is_400(target: Ledgered) -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    raw = body({**reservation_body(1), "metadata": deep})
    head = (
        "POST /v1/reservations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"X-Cycles-API-Key: {target.key}\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    assert assert_refused_and_unchanged(target, head.encode() + raw)["error"] == "INVALID_REQUEST"


# ---------------------------------------------------------------------- properties

ENDPOINTS = [
    ("POST", "/v1/reservations"),
    ("GET", "/v1/reservations"),
    ("GET", "/v1/reservations/{rid}"),
    ("POST", "/v1/reservations/{rid}/commit"),
    ("POST", "/v1/reservations/{rid}/release"),
    ("POST", "/v1/reservations/{rid}/extend"),
    ("POST", "/v1/decide"),
    ("GET", "/v1/balances"),
    ("POST", "/v1/events"),
    ("GET", "/healthz"),
    ("POST", "/v1/admin/tenants"),
    ("GET", "/v1/admin/tenants"),
    ("POST", "/v1/admin/api-keys"),
    ("POST", "/v1/admin/budgets"),
    ("GET", "/v1/admin/budgets"),
    ("PATCH", "/v1/admin/budgets"),
    ("POST", "/v1/admin/budgets/fund"),
]
FIELDS = [
    "idempotency_key", "subject", "action", "estimate", "actual", "ttl_ms", "grace_period_ms",
    "overage_policy", "dry_run", "metadata", "metrics", "extend_by_ms", "reason", "tenant_id",
    "name", "permissions", "key_secret", "scope", "unit", "allocated", "overdraft_limit",
    "operation", "amount", "spent", "caps", "tenant", "workspace", "kind", "tokens_input",
]  # fmt: skip

texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "acme", "tenant:acme", LC_UNIT, "CREDIT", "RESET"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**63 - 1, 2**63, -1]),
    st.floats(allow_nan=False),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), texts), inner, max_size=5),
    ),
    max_leaves=20,
)


@st.composite
def endpoint_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request body for some endpoint, with some fields replaced by arbitrary JSON."""
    base = draw(
        st.sampled_from(
            [
                reservation_body(5, subject={"tenant": "acme", "workspace": "prod"}),
                {"idempotency_key": "k", "actual": {"unit": LC_UNIT, "amount": 3}},
                {"idempotency_key": "k", "extend_by_ms": 1000},
                {"operation": "CREDIT", "amount": {"unit": LC_UNIT, "amount": 5}},
                {
                    "scope": "tenant:acme/app:x",
                    "unit": LC_UNIT,
                    "allocated": {"unit": LC_UNIT, "amount": 5},
                },
                {"tenant_id": "acme", "name": "n", "permissions": ["balances:read"]},
            ]
        )
    )
    changes = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3))
    removed = draw(st.sets(st.sampled_from(sorted(base)), max_size=2))
    return {**{k: v for k, v in base.items() if k not in removed}, **changes}


queries = st.lists(
    st.tuples(
        st.sampled_from(["limit", "cursor", "tenant", "workspace", "status", "from", "to",
                         "sort_by", "sort_dir", "scope", "unit", "tenant_id", "x"]),
        st.one_of(texts, st.integers(min_value=-(10**30), max_value=10**30).map(str)),
    ),
    max_size=4,
)  # fmt: skip


def query_string(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in pairs)


@given(
    endpoint=st.sampled_from(ENDPOINTS),
    payload=st.one_of(endpoint_bodies(), json_values),
    params=queries,
    auth=st.sampled_from(["runtime", "admin", "both", "none", "bad"]),
)
def test_any_json_to_any_endpoint_is_answered_below_500_and_the_ledger_balances(
    target: Ledgered,
    endpoint: tuple[str, str],
    payload: Any,
    params: list[tuple[str, str]],
    auth: str,
) -> None:
    method, path = endpoint
    headers: dict[str, str] = {}
    if auth in ("runtime", "both"):
        headers["X-Cycles-API-Key"] = target.key
    if auth in ("admin", "both"):
        headers["X-Admin-API-Key"] = LC_ADMIN_KEY
    if auth == "bad":
        headers["X-Cycles-API-Key"] = "cyc_local_acme"
    url = path.replace("{rid}", target.reservation_id)
    if params:
        url += "?" + query_string(params)
    status, answer = target.request(method, url, headers, body(payload))
    assert status < 500, answer
    assert_ledger_invariants(target.ledger)


header_names = st.one_of(
    st.sampled_from(["Content-Length", "X-Cycles-API-Key", "X-Idempotency-Key", "Connection",
                     "Transfer-Encoding", "Expect", "traceparent", "Host"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
    .filter(lambda name: ":" not in name),
)  # fmt: skip


def line_text(size: int) -> st.SearchStrategy[str]:
    """Any text that stays on the request line (line breaks are the headers' business)."""
    return st.text(alphabet=st.characters(exclude_characters="\r\n"), max_size=size)


header_values = st.one_of(
    st.sampled_from(["", "0", "²", ARABIC_ONE, "9" * 50, "close", "chunked", "100-continue", "-1"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
)


@given(
    method=st.one_of(st.sampled_from(["GET", "POST", "PATCH", "DELETE"]), line_text(8)),
    path=st.one_of(st.sampled_from([p for _, p in ENDPOINTS]), line_text(30)),
    headers=st.lists(st.tuples(header_names, header_values), max_size=5),
    payload=st.binary(max_size=200),
)  # fmt: skip
def test_any_bytes_get_a_well_formed_json_answer_below_500(
    target: Ledgered,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    payload: bytes,
) -> None:
    # Any request line, any headers (a Content-Length among them is taken as sent, so it may
    # not match the body), then the body; the write side is closed so nothing waits for more.
    line = f"{method} {path.replace('{rid}', target.reservation_id)} HTTP/1.1\r\n"
    head = line + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    raw = head.encode("utf-8", errors="surrogatepass") + payload
    reply = target.exchange(raw).removeprefix(CONTINUE)
    if not reply:
        # Closing without an answer is fine only for a request that never arrived whole: a
        # body shorter than its Content-Length when the client stopped sending.
        declared = [
            value.strip() for name, value in headers if name.strip().lower() == "content-length"
        ]
        assert any(v.isascii() and v.isdigit() and int(v) > len(payload) for v in declared), raw
    else:
        status, answer = parse_answer(reply)
        assert status < 500, answer
    assert_ledger_invariants(target.ledger)
