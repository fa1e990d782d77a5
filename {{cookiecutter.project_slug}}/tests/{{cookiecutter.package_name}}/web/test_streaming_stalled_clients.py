"""A client that stops reading a stream: the stream still ends, charged, before its hold lapses.

While the server waits to write to such a client the stream's own code does not run, so it
can neither check its hold nor settle it. The heartbeat does both: it ends a stream stuck on
one write for STREAM_WRITE_TIMEOUT, or whose hold cannot be extended and has only time for
one commit left; it charges what the stream produced and cuts the connection, so the
server's blocked write fails and the stream's own cleanup runs.

The clients here open a real socket with a tiny receive buffer and never read; the provider
streams far more than the socket buffers between them hold.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from conftest import CountingProvider, Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.hold_keeper import HoldKeeper
from {{ cookiecutter.package_name }}.budget.holds import Hold
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.llm import StreamProgress
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from localcycles import LocalCyclesServer
from support.clocked_fixtures import ServerClock

PROMPT = "Write out the whole ledger, line by line."
MAX_TOKENS = 1_000_000
TOKEN_BYTES = 8  # the firehose's tokens: output_tokens = bytes / 8
DELTA_TOKENS = 4_096  # 32 KiB per delta
TTL_MS = 60_000
GRACE_MS = 5_000
PATIENCE_S = 30.0
CALLS = 3  # each test's budget pays for this many calls at the stream's estimate
LIMITS = {"MAX_TOKENS_LIMIT": str(MAX_TOKENS)}


class Firehose(FakeProvider):
    """Streams 32 KiB deltas up to max_tokens (8 MB): more than any socket buffer holds."""

    def __init__(self) -> None:
        super().__init__("fake-model")
        self.progress: StreamProgress | None = None
        self.closed = threading.Event()

    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, system: str | None = None
    ) -> Iterator[str]:
        self.progress = progress
        progress.input_tokens, progress.model = 20, self.model
        produced = 0
        try:
            while produced < max_tokens:
                tokens = min(DELTA_TOKENS, max_tokens - produced)
                text = "x" * (tokens * TOKEN_BYTES)
                progress.add_text(text)
                produced += tokens
                progress.output_tokens = produced
                yield text
            progress.usage_final = True
        finally:
            self.closed.set()


class NeverReads:
    """A client that sends a streaming request, then never reads (until told to)."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.sock = socket.socket()
        # Before connect, so the window the client advertises stays this small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(PATIENCE_S)
        self.sock.connect((url.hostname, url.port))
        body = json.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True})
        headers = {
            "Host": url.netloc,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            **auth_headers("acme"),
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.sock.sendall(f"POST /chat HTTP/1.1\r\n{head}\r\n{body}".encode())

    def read_to_the_end(self) -> bytes:
        """Everything the server sent before it closed the connection."""
        received = bytearray()
        while chunk := self.sock.recv(1 << 16):
            received += chunk
        self.sock.close()
        return bytes(received)


def delta_bytes(raw: bytes) -> int:
    """Text bytes of the complete delta events in a raw (chunked) SSE response."""
    total = 0
    for match in re.finditer(rb"data: (\{[^\n]*\})\n\n", raw):
        data = json.loads(match.group(1))
        if data["type"] == "delta":
            total += len(data["text"].encode())
    return total


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def serve_at_once(app: Flask) -> int:
    """Twice the budget's calls at once, at the stream's estimate, each held until all have
    been answered or started: how many were served."""
    gate = threading.Event()
    provider = CountingProvider(model="fake-model", gate=gate)
    app.extensions["llm"] = provider
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}

    def chat() -> int:
        response = app.test_client().post("/chat", json=body, headers=auth_headers("acme"))
        return response.status_code

    with ThreadPoolExecutor(max_workers=2 * CALLS) as pool:
        calls = [pool.submit(chat) for _ in range(2 * CALLS)]
        wait_for(
            lambda: sum(call.done() for call in calls) + provider.calls == len(calls),
            "every call to be answered or started",
        )
        gate.set()
        statuses = [call.result() for call in calls]
    assert set(statuses) <= {200, 402}, statuses
    return statuses.count(200)


def completion_costs(served: int) -> int:
    usage = FakeProvider("fake-model").complete(prompt=PROMPT, max_tokens=MAX_TOKENS)
    return served * pricing.cost(usage.input_tokens, usage.output_tokens)


def wait_until_blocked(provider: Firehose) -> None:
    """Until the stream stops producing: it is parked at a write its client does not read."""
    produced, unchanged = -1, 0
    deadline = time.monotonic() + PATIENCE_S
    while unchanged < 20:  # a second without progress: a write that does not return
        assert time.monotonic() < deadline, "the stream never blocked"
        time.sleep(0.05)
        now = provider.progress.text_bytes if provider.progress else 0
        unchanged = unchanged + 1 if now == produced and now > 0 else 0
        produced = now


def stream_charge(provider: Firehose, charged: int, estimate: int, raw: bytes) -> None:
    """The stream was charged what it produced: at least what reached the client, at most
    its estimate."""
    progress = provider.progress
    assert progress is not None and progress.input_tokens is not None
    assert progress.output_tokens is not None
    assert charged == pricing.cost(progress.input_tokens, progress.output_tokens)
    received_tokens = delta_bytes(raw) // TOKEN_BYTES
    assert charged >= pricing.cost(progress.input_tokens, received_tokens)
    assert charged <= estimate
    # The client really was left behind: the provider produced more than it got.
    assert progress.output_tokens > received_tokens


# --- a write that waits too long ------------------------------------------------------------


def test_a_client_that_stops_reading_is_cut_off_and_charged_for_what_it_was_sent(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    estimate = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    provisioner.set_budget("acme", allocated=CALLS * estimate)
    app = make_app(cycles_server.base_url, STREAM_WRITE_TIMEOUT="0.2", **LIMITS)
    provider = Firehose()
    app.extensions["llm"] = provider
    client = NeverReads(serve(app))

    # The heartbeat settles the stream stuck on its write and cuts the connection: the
    # server's write fails, the stream's cleanup closes the provider, and the client gets
    # what was buffered on the way, then the end of the connection.
    wait_for(lambda: provisioner.reservation_statuses("acme") not in ([], ["ACTIVE"]), "an end")
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
    assert provider.closed.wait(PATIENCE_S), "the stream's provider was never closed"
    raw = client.read_to_the_end()
    assert raw.startswith(b"HTTP/1.1 200")
    charged = provisioner.balance("acme")["spent"]
    stream_charge(provider, charged, estimate, raw)
    wait_for(lambda: budget_service(app).keeper.following() == 0, "the stream to be closed")

    served = serve_at_once(app)
    assert 1 + served <= CALLS
    balance = provisioner.balance("acme")
    assert balance["spent"] == charged + completion_costs(served)
    assert (balance["reserved"], balance["debt"]) == (0, 0)


# --- a hold that cannot be extended any more -------------------------------------------------


class KeeperClock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def test_a_stalled_stream_is_settled_before_its_last_extension_runs_out(
    clocked_server: LocalCyclesServer,
    server_clock: ServerClock,
    clocked: Provisioner,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    # The server allows one extension here (ten in the protocol): the stream
    # outlived all ten, its hold lapsed under it and the budget paid for 37 more calls.
    clocked_server.ledger.max_extensions = 1
    ledger = clocked
    # A write may wait for an hour: only the hold's end can stop this stream.
    app = make_app(clocked_server.base_url, STREAM_WRITE_TIMEOUT="3600", **LIMITS)
    budgets = budget_service(app)
    clock = KeeperClock()
    budgets.keeper.close()
    budgets.keeper = budgets.new_keeper(clock, background=False)
    estimate = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    ledger.set_budget("acme", allocated=CALLS * estimate)
    provider = Firehose()
    app.extensions["llm"] = provider
    client = NeverReads(serve(app))
    (hold,) = wait_for(lambda: list(budgets.keeper._due), "the heartbeat to watch the hold")
    wait_until_blocked(provider)

    # Drive the heartbeat by its own schedule, both clocks moving together.
    for _ in range(10):
        next_look = budgets.keeper.run_due()
        if hold.settled:
            break
        assert next_look is not None
        step = max(0.0, next_look - clock.now)
        clock.now += step
        server_clock.now_ms += int(step * 1000)
    assert hold.settled and hold.extensions == 1 and not hold.extendable
    # Settled by a commit (the keeper's, or the stream's own once its write failed), while
    # the server's clock stood before the hold's end.
    wait_for(lambda: ledger.reservation_statuses("acme") != ["ACTIVE"], "the commit")
    assert ledger.reservation_statuses("acme") == ["COMMITTED"]
    assert provider.closed.wait(PATIENCE_S), "the stream's provider was never closed"
    raw = client.read_to_the_end()
    charged = ledger.balance("acme")["spent"]
    stream_charge(provider, charged, estimate, raw)

    # Long after the hold would have lapsed, nothing came back to be spent twice.
    server_clock.now_ms += 11 * TTL_MS + GRACE_MS + 1
    budgets.keeper.close()
    budgets.keeper = budgets.new_keeper()  # back on the real clock, which new holds use
    served = serve_at_once(app)
    assert 1 + served <= CALLS
    assert ledger.reservation_statuses("acme") == ["COMMITTED"] * (1 + served)
    balance = ledger.balance("acme")
    assert balance["spent"] == charged + completion_costs(served)
    assert (balance["reserved"], balance["debt"]) == (0, 0)


# --- the keeper's rules, one pass at a time ---------------------------------------------------


def test_the_keeper_ends_only_a_stream_that_waits_on_a_write() -> None:
    clock = KeeperClock()
    ended: list[tuple[str, str]] = []
    cuts: list[str] = []
    keeper = HoldKeeper(
        lambda hold: False,
        ttl_ms=TTL_MS,
        lead_s=10,
        settle_lead_s=5,
        write_timeout_s=30,
        clock=clock,
        background=False,
    )

    def follow(route: str, expires_in: float) -> Any:
        hold = Hold(
            "acme", route, 1, "enforce", reservation_id=route, expires_at=clock.now + expires_in
        )
        return keeper.follow(
            hold, lambda reason: ended.append((route, reason)), lambda: cuts.append(route)
        )

    stuck = follow("stuck", 3_600)  # waits on its first write from the start
    busy = follow("busy", 3_600)
    assert busy.taken()  # the server took its first chunk: the stream runs
    lapsing = follow("lapsing", 40)
    assert lapsing.taken()

    # Half a timeout later the keeper looks again; nothing has waited long enough yet.
    assert keeper.run_due() == clock.now + 15
    clock.now += 29
    keeper.run_due()
    assert ended == []
    clock.now += 1
    lapsing.handing_over()  # writes; its hold has 10 s left, more than one commit needs
    keeper.run_due()
    assert ended == [("stuck", "write_stalled")] and cuts == ["stuck"]
    assert stuck.ended == "write_stalled" and not stuck.taken()

    clock.now += 5  # the lapsing hold now has only time for its commit
    keeper.run_due()
    assert ended[1:] == [("lapsing", "hold_lapsing")] and not lapsing.taken()
    assert busy.ended is None and busy.taken()  # running: its own checks apply
    keeper.unfollow(stuck)
    keeper.unfollow(lapsing)
    assert keeper.following() == 1


def test_without_a_socket_to_cut_a_stalled_stream_is_charged_and_ends_at_its_next_write(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
) -> None:
    # Flask's test client gives no socket, like a WSGI server other than gunicorn or
    # Werkzeug's: the heartbeat charges the stream and the stream ends when it runs again.
    app = make_app(cycles_server.base_url, STREAM_WRITE_TIMEOUT="5", **LIMITS)
    budgets = budget_service(app)
    clock = KeeperClock()
    budgets.keeper.close()
    budgets.keeper = budgets.new_keeper(clock, background=False)
    provider = Firehose()
    app.extensions["llm"] = provider
    response = app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": 64 * 1024, "stream": True},
        headers=auth_headers("acme"),
        buffered=False,
    )
    chunks = iter(response.response)
    first = next(chunks)  # the client reads one event, then nothing for a while
    clock.now += 5
    budgets.keeper.run_due()
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
    assert provider.progress is not None and provider.progress.output_tokens is not None
    charged = pricing.cost(20, provider.progress.output_tokens)
    assert provisioner.balance("acme")["spent"] == charged

    rest = list(chunks)  # the client reads again: no more output, the reason, the end
    response.close()
    assert first.startswith(b"event: delta") and len(rest) == 1
    assert rest[0].startswith(b"event: error") and b'"error":"stream_stalled"' in rest[0]
    assert provider.closed.is_set()
    assert provisioner.balance("acme")["spent"] == charged  # charged once
    assert budgets.keeper.following() == 0
