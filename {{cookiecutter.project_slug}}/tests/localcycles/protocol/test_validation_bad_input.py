"""Malformed requests get a JSON 4xx, never a 500, and the server keeps serving."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from localcycles import LocalCyclesServer, LocalLedger
from support.localcycles_kit import reservation_body

ERROR_FIELDS = {"error", "message", "request_id", "trace_id"}


@pytest.fixture
def auth(lc_ledger: LocalLedger, lc_api_key: str) -> dict[str, str]:
    lc_ledger.set_budget("tenant:acme", allocated=1_000)
    return {"X-Cycles-API-Key": lc_api_key}


def assert_json_error(resp: httpx.Response, status: int, code: str = "INVALID_REQUEST") -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) >= ERROR_FIELDS and body["error"] == code


def with_estimate(amount: Any, unit: Any = "USD_MICROCENTS") -> dict[str, Any]:
    return {**reservation_body(1), "estimate": {"unit": unit, "amount": amount}}


BAD_BODIES: list[Any] = [
    with_estimate("100"),
    with_estimate(1.5),
    with_estimate(True),
    with_estimate(-1),
    with_estimate(2**63),
    with_estimate(10**40),
    with_estimate(5, unit="EUR"),
    with_estimate(5, unit=None),
    {**reservation_body(1), "estimate": {"unit": "USD_MICROCENTS", "amount": 1, "x": 1}},
    {**reservation_body(1), "subject": {}},
    {**reservation_body(1), "subject": {"dimensions": {"a": "b"}}},
    {**reservation_body(1), "subject": {"tenant": "a" * 129}},
    {**reservation_body(1), "subject": {"tenant": "acme", "workspace": "a/b"}},
    {**reservation_body(1), "subject": "acme"},
    {**reservation_body(1), "action": {"kind": "k" * 65, "name": "n"}},
    {**reservation_body(1), "action": {"kind": "k"}},
    {**reservation_body(1), "idempotency_key": "k" * 257},
    {**reservation_body(1), "idempotency_key": ""},
    {**reservation_body(1), "ttl_ms": 999},
    {**reservation_body(1), "ttl_ms": 86_400_001},
    {**reservation_body(1), "grace_period_ms": 60_001},
    {**reservation_body(1), "overage_policy": "SOMETIMES"},
    {**reservation_body(1), "dry_run": "yes"},
    {**reservation_body(1), "unexpected": 1},
    {key: value for key, value in reservation_body(1).items() if key != "subject"},
    [reservation_body(1)],
    "just a string",
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_invalid_reservation_bodies_are_400(
    lc_http: httpx.Client, auth: dict[str, str], body: Any
) -> None:
    assert_json_error(lc_http.post("/v1/reservations", json=body, headers=auth), 400)


@pytest.mark.parametrize(
    "raw", [b"not json", b"{", b'{"a": NaN}', b"\xff\xfe", b"[" * 100_000, b""]
)
def test_unparseable_bodies_are_400(
    lc_http: httpx.Client, auth: dict[str, str], raw: bytes
) -> None:
    assert_json_error(lc_http.post("/v1/reservations", content=raw, headers=auth), 400)


def test_other_endpoints_validate_too(
    lc_http: httpx.Client, auth: dict[str, str], lc_ledger: LocalLedger
) -> None:
    rid = lc_http.post("/v1/reservations", json=reservation_body(1), headers=auth).json()[
        "reservation_id"
    ]
    cases = [
        (f"/v1/reservations/{rid}/commit", {"idempotency_key": "c", "actual": {"amount": 1}}),
        (f"/v1/reservations/{rid}/commit", {"idempotency_key": "c"}),
        (f"/v1/reservations/{rid}/extend", {"idempotency_key": "e", "extend_by_ms": 0}),
        (f"/v1/reservations/{rid}/release", {"idempotency_key": "r", "reason": "x" * 257}),
        ("/v1/events", {**reservation_body(1), "actual": {"unit": "TOKENS", "amount": -5}}),
        ("/v1/decide", {**reservation_body(1), "ttl_ms": 5_000}),
        ("/v1/reservations/" + "r" * 129 + "/commit", {"idempotency_key": "c"}),
    ]
    for path, body in cases:
        assert_json_error(lc_http.post(path, json=body, headers=auth), 400)
    for query in ("", "?tenant=acme&limit=0", "?workspace=" + "w" * 129):
        assert_json_error(lc_http.get("/v1/balances" + query, headers=auth), 400)
    for query in (
        "?limit=201",
        "?status=DONE",
        "?from=yesterday",
        "?cursor=%%%",
        "?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
    ):
        assert_json_error(lc_http.get("/v1/reservations" + query, headers=auth), 400)
    assert lc_http.get("/v1/reservations?from=&to=", headers=auth).status_code == 200


def test_auth_routing_and_method_errors_are_json(
    lc_http: httpx.Client, auth: dict[str, str]
) -> None:
    assert_json_error(
        lc_http.post("/v1/reservations", json=reservation_body(1)), 401, "UNAUTHORIZED"
    )
    assert_json_error(
        lc_http.get("/v1/balances?tenant=acme", headers={"X-Cycles-API-Key": "wrong"}),
        401,
        "UNAUTHORIZED",
    )
    assert_json_error(lc_http.get("/nowhere", headers=auth), 404, "NOT_FOUND")
    assert_json_error(lc_http.get("/v1/reservations/rsv_x/commit", headers=auth), 405)
    resp = lc_http.delete("/v1/reservations", headers=auth)
    assert_json_error(resp, 405)
    assert resp.headers["allow"] == "GET, POST"
    assert_json_error(lc_http.get("/v1/reservations/rsv_nope", headers=auth), 404, "NOT_FOUND")


def raw_exchange(server: LocalCyclesServer, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_body_is_413_without_reading_it(
    lc_server: LocalCyclesServer, auth: dict[str, str], lc_http: httpx.Client
) -> None:
    head = (
        b"POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Cycles-API-Key: "
        + auth["X-Cycles-API-Key"].encode()
        + b"\r\nContent-Length: 10485760\r\n\r\n"
    )
    reply = raw_exchange(lc_server, head, b"{" * 65536)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Content Too Large"
    assert b"Connection: close" in rest and b'"error":"INVALID_REQUEST"' in rest

    chunked = raw_exchange(
        lc_server,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 411 ")
    garbage = raw_exchange(lc_server, b"NONSENSE\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ") and b'"request_id"' in garbage
    assert lc_http.get("/healthz").json() == {"status": "UP"}
