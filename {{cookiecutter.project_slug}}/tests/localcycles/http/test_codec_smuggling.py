"""Smuggling-shaped requests against the running embedded server, over a raw socket.

Each head below is one a proxy in front could frame differently from the server (two
Content-Length values, whitespace before the colon, a folded line, both framings). The
server must answer 400 with its JSON error, close the connection without reading on, and
leave the ledger untouched; the same reservation with a plain Content-Length is served, so
"untouched" is not just a request that could never have reached the ledger.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from localcycles import LocalCyclesServer, LocalLedger
from support.localcycles_kit import LC_TENANT, ledger_state, reservation_body

BODY = json.dumps(reservation_body(1_000)).encode()
# Sent after each request on the same connection: answered only if the server reads on.
NEXT = b"GET /healthz HTTP/1.1\r\nHost: local\r\n\r\n"


def reserve(api_key: str, *framing: str) -> bytes:
    """A reservation request whose body is framed by the ``framing`` header lines."""
    lines = [
        "POST /v1/reservations HTTP/1.1",
        "Host: local",
        "Content-Type: application/json",
        f"X-Cycles-API-Key: {api_key}",
        *framing,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + BODY


def exchange(server: LocalCyclesServer, raw: bytes) -> tuple[list[tuple[int, Any]], bool]:
    """Send ``raw`` (write side left open) and read answers until the server closes.

    Returns the (status, JSON body) of each answer and whether the server closed the
    connection after them (False: it was still waiting when the read timed out).
    """
    answers: list[tuple[int, Any]] = []
    buffer = b""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(raw)
        closed = False
        while True:
            while b"\r\n\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
                length = int(fields["content-length"])
                if len(rest) < length:
                    break
                answers.append((int(lines[0].split()[1]), json.loads(rest[:length])))
                buffer = rest[length:]
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            buffer += chunk
    return answers, closed


@pytest.fixture
def api_key(lc_ledger: LocalLedger, lc_api_key: str) -> str:
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", allocated=1_000_000)
    return lc_api_key


@pytest.mark.parametrize(
    ("framing", "words"),
    [
        # Last-one-wins read the body by the second value; a proxy taking the first one
        # would see an empty POST and then a second request made of the body.
        ((f"Content-Length: 0\r\nContent-Length: {len(BODY)}",), "Conflicting Content-Length"),
        ((f"Content-Length : {len(BODY)}",), "Whitespace before the colon"),
        # Once read as a header of its own once the leading space was stripped.
        ((f"X-Note: a\r\n Content-Length: {len(BODY)}",), "Obsolete line folding"),
        ((f"Transfer-Encoding: chunked\r\nContent-Length: {len(BODY)}",), "Transfer-Encoding"),
    ],
)
def test_an_ambiguously_framed_request_is_400_closed_and_never_reaches_the_ledger(
    lc_server: LocalCyclesServer, api_key: str, framing: tuple[str, ...], words: str
) -> None:
    before = ledger_state(lc_server.ledger)
    answers, closed = exchange(lc_server, reserve(api_key, *framing) + NEXT)
    assert len(answers) == 1, answers  # nothing after the refused head is read as a request
    status, body = answers[0]
    assert status == 400 and body["error"] == "INVALID_REQUEST" and words in body["message"]
    assert set(body) == {"error", "message", "request_id", "trace_id"}
    assert closed, "the server kept the connection open after refusing its framing"
    assert ledger_state(lc_server.ledger) == before


def test_the_same_reservation_plainly_framed_is_served(
    lc_server: LocalCyclesServer, api_key: str
) -> None:
    before = ledger_state(lc_server.ledger)
    answers, _ = exchange(
        lc_server, reserve(api_key, f"Content-Length: {len(BODY)}", "Connection: close")
    )
    assert [status for status, _ in answers] == [200] and answers[0][1]["decision"] == "ALLOW"
    assert ledger_state(lc_server.ledger)["reservations"] != before["reservations"]
