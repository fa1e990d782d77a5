"""No hold lapses under a live call: the TTL rule, bounded calls, heartbeats, late commits.

The Cycles server here runs on a clock the test moves, so "the hold expired while the
provider ran" happens by a jump of the clock, not by waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from conftest import (
    UNIT,
    CountingProvider,
    CyclesStub,
    Provisioner,
    Responder,
    StubReply,
    StubRequest,
    answering,
    assert_error,
    auth_headers,
    budget_scope,
    cycles_error,
    forward_to,
)
from {{ cookiecutter.package_name }}.budget import pricing, reservations
from {{ cookiecutter.package_name }}.budget.hold_keeper import HoldKeeper
from {{ cookiecutter.package_name }}.budget.holds import Hold
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.config import ConfigError
from {{ cookiecutter.package_name }}.errors import ApiError
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from {{ cookiecutter.package_name }}.web import guard
from localcycles import LocalCyclesServer
from support.clocked_fixtures import ServerClock

PROMPT = "Summarise the quarterly numbers in two sentences."
MAX_TOKENS = 32
TTL_MS = 60_000
GRACE_MS = 5_000  # the protocol's default grace period after expiry
PATIENCE_S = 30.0


def estimate() -> int:
    # Independent of the guard: UTF-8 bytes plus 8 tokens of overhead, then max_tokens.
    input_bound = len(PROMPT.encode()) + 8
    return pricing.cost(input_bound, MAX_TOKENS)


def chat(app: Flask, tenant: str = "acme") -> Any:
    return app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": MAX_TOKENS}, headers=auth_headers(tenant)
    )


# --- the TTL rule ------------------------------------------------------------------------


def test_start_up_refuses_a_ttl_shorter_than_the_longest_call(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    # LLM_TIMEOUT 30 s + 2 x (connect 1 s + read 2 s + 5 s) + 1 s margin = 47 s.
    settings = {"LLM_TIMEOUT": "30", "CYCLES_CONNECT_TIMEOUT": "1", "CYCLES_READ_TIMEOUT": "2"}
    with pytest.raises(ConfigError) as info:
        make_app("http://127.0.0.1:9", CYCLES_RESERVATION_TTL_MS="46999", **settings)
    message = str(info.value)
    for name in ("CYCLES_RESERVATION_TTL_MS", "LLM_TIMEOUT", "CYCLES_CONNECT_TIMEOUT", "47000"):
        assert name in message
    app = make_app("http://127.0.0.1:9", CYCLES_RESERVATION_TTL_MS="47000", **settings)
    assert app.extensions["settings"].cycles_reservation_ttl_ms == 47_000


def test_each_reservation_carries_the_configured_ttl(
    recorder: CyclesStub, make_app: Callable[..., Flask]
) -> None:
    app = make_app(recorder.base_url, CYCLES_RESERVATION_TTL_MS="123456")
    assert chat(app).status_code == 200
    (reserve,) = recorder.bodies("/v1/reservations")
    assert reserve["ttl_ms"] == 123_456


# --- expired holds never pay for extra calls ----------------------------------------------


def test_holds_expiring_under_slow_calls_never_serve_more_than_the_budget(
    clocked_server: LocalCyclesServer,
    clocked: Provisioner,
    server_clock: ServerClock,
    make_app: Callable[..., Flask],
) -> None:
    calls = 3
    clocked.set_budget("acme", allocated=calls * estimate())
    gate = threading.Event()
    provider = CountingProvider(model="fake-model", gate=gate)
    app = make_app(clocked_server.base_url, CYCLES_DENY_CACHE_MS="0")
    app.extensions["llm"] = provider

    with ThreadPoolExecutor(max_workers=2 * calls) as pool:
        first_wave = [pool.submit(chat, app) for _ in range(calls)]
        for _ in range(calls):
            assert provider.started.acquire(timeout=PATIENCE_S)
        # The first wave's holds lapse at Cycles while their provider calls still run ...
        server_clock.now_ms += TTL_MS + GRACE_MS + 1
        # ... and a second wave takes the budget they gave back.
        second_wave = [pool.submit(chat, app) for _ in range(calls)]
        for _ in range(calls):
            assert provider.started.acquire(timeout=PATIENCE_S)
        gate.set()
        statuses = [future.result().status_code for future in first_wave + second_wave]

    assert statuses.count(200) == calls
    for future in first_wave:
        assert_error(future.result(), 503, "reservation_expired")
    balance = clocked.balance("acme")
    assert balance["reserved"] == 0
    assert balance["remaining"] >= 0


def gated_app(
    make_app: Callable[..., Flask], cycles_url: str
) -> tuple[Flask, CountingProvider, threading.Event]:
    """An app on ``cycles_url`` whose provider calls wait until the returned gate is set."""
    gate = threading.Event()
    provider = CountingProvider(model="fake-model", gate=gate)
    app = make_app(cycles_url, CYCLES_DENY_CACHE_MS="0")
    app.extensions["llm"] = provider
    return app, provider, gate


def test_a_commit_after_expiry_is_recorded_as_debt_where_overdraft_allows(
    clocked_server: LocalCyclesServer,
    clocked: Provisioner,
    server_clock: ServerClock,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
) -> None:
    clocked_server.ledger.set_budget(
        budget_scope("acme"), UNIT, allocated=estimate(), overdraft_limit=10 * estimate()
    )
    recorder = cycles_stub(forward_to(clocked_server.base_url))
    app, provider, gate = gated_app(make_app, recorder.base_url)
    with ThreadPoolExecutor(max_workers=2) as pool:
        late = pool.submit(chat, app)
        assert provider.started.acquire(timeout=PATIENCE_S)
        server_clock.now_ms += TTL_MS + GRACE_MS + 1
        # The lapsed hold went back to the pool; a second request spends all of it.
        second = pool.submit(chat, app)
        assert provider.started.acquire(timeout=PATIENCE_S)
        gate.set()
        assert second.result().status_code == 200
        assert_error(late.result(), 503, "reservation_expired")

    usage = FakeProvider("fake-model").complete(prompt=PROMPT, max_tokens=MAX_TOKENS)
    cost = pricing.cost(usage.input_tokens, usage.output_tokens)
    balance = clocked.balance("acme")
    # Both calls are on the books: the late one in full, as debt beyond the allocation
    # (how much is debt depends on which of the two settled first).
    assert balance["spent"] + balance["debt"] == 2 * cost
    assert balance["debt"] >= 2 * cost - estimate() > 0
    assert balance["reserved"] == 0
    # One spend event, in full, as debt: no second attempt once the first was taken.
    (late_event,) = recorder.bodies("/v1/events")
    assert late_event["overage_policy"] == "ALLOW_WITH_OVERDRAFT"
    committed = {r.path.split("/")[3] for r in recorder.requests if r.path.endswith("/commit")}
    assert late_event["metadata"]["reservation_id"] in committed  # traceable to its hold
    assert late_event["actual"]["amount"] == cost


def test_a_late_commit_past_the_overdraft_limit_takes_what_is_left_and_logs_the_rest(
    clocked_server: LocalCyclesServer,
    clocked: Provisioner,
    server_clock: ServerClock,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = cycles_stub(forward_to(clocked_server.base_url))
    app, provider, gate = gated_app(make_app, recorder.base_url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        late = pool.submit(chat, app)
        assert provider.started.acquire(timeout=PATIENCE_S)
        server_clock.now_ms += TTL_MS + GRACE_MS + 1
        # Meanwhile the operator cut the budget to nothing, with 1 microcent of overdraft.
        clocked_server.ledger.set_budget(budget_scope("acme"), UNIT, allocated=0, overdraft_limit=1)
        gate.set()
        assert_error(late.result(), 503, "reservation_expired")
    overdraft, fallback = recorder.bodies("/v1/events")
    assert overdraft["overage_policy"] == "ALLOW_WITH_OVERDRAFT"
    assert fallback["overage_policy"] == "ALLOW_IF_AVAILABLE"
    assert fallback["idempotency_key"] != overdraft["idempotency_key"]
    balance = clocked.balance("acme")
    assert (balance["spent"], balance["debt"], balance["reserved"]) == (0, 0, 0)
    assert any("could not be charged" in r.getMessage() for r in caplog.records)


# --- bounded provider calls ---------------------------------------------------------------


def test_a_provider_call_past_its_time_is_abandoned_and_charged_its_estimate(
    app: Flask,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_server: LocalCyclesServer,
) -> None:
    gate = threading.Event()
    slow = make_app(cycles_server.base_url, LLM_TIMEOUT="0.1")
    slow.extensions["llm"] = CountingProvider(model="fake-model", gate=gate)
    try:
        assert_error(chat(slow), 504, "provider_timeout")
    finally:
        gate.set()
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (estimate(), 0)


class Overreporting(FakeProvider):
    """A provider whose usage says it wrote more than max_tokens allowed."""

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Any:
        completion = super().complete(prompt=prompt, max_tokens=max_tokens, system=system)
        return type(completion)(
            completion.text, completion.input_tokens, max_tokens * 3, completion.model
        )


def test_usage_past_max_tokens_is_charged_in_full_and_logged(
    app: Flask, provisioner: Provisioner, caplog: pytest.LogCaptureFixture
) -> None:
    app.extensions["llm"] = Overreporting("fake-model")
    response = chat(app)
    assert response.status_code == 200, response.get_json()
    full = pricing.cost(response.get_json()["usage"]["input_tokens"], MAX_TOKENS * 3)
    assert full > estimate()
    assert response.get_json()["cost_usd_microcents"] == full
    assert provisioner.balance("acme")["spent"] == full
    assert any("more output tokens than max_tokens" in r.getMessage() for r in caplog.records)


# --- heartbeats ----------------------------------------------------------------------------


class KeeperClock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def test_the_keeper_extends_only_what_is_due_and_stops_on_a_refusal() -> None:
    clock = KeeperClock()
    extended: list[str] = []
    refuse = {"b"}

    def extend(hold: Hold) -> bool:
        extended.append(hold.route)
        if hold.route in refuse:
            hold.extendable = False
            return False
        hold.expires_at += 60
        return True

    keeper = HoldKeeper(extend, ttl_ms=60_000, lead_s=10, clock=clock)
    early = Hold("acme", "a", 1, "enforce", reservation_id="r1", expires_at=clock.now + 40)
    late = Hold("acme", "b", 1, "enforce", reservation_id="r2", expires_at=clock.now + 50)
    gone = Hold("acme", "c", 1, "enforce", reservation_id="r3", expires_at=clock.now + 5)
    for hold in (early, late, gone):
        keeper._due[hold] = hold.expires_at - keeper._lead_s  # watched, without the thread
    keeper.forget(gone)

    assert keeper.run_due() == early.expires_at - 30  # half the TTL is the lead here
    assert extended == []
    clock.now += 11
    keeper.run_due()
    assert extended == ["a"] and early.expires_at == clock.now - 11 + 100
    clock.now += 10
    keeper.run_due()
    assert extended == ["a", "b"]
    assert keeper.watching() == 1  # b refused for good: no longer watched
    assert keeper.time_left(late) == late.expires_at - clock.now


class PacedProvider(FakeProvider):
    """Streams one delta per permit."""

    def __init__(self) -> None:
        super().__init__("fake-model")
        self.permits = threading.Semaphore(0)

    def stream(self, **kwargs: Any) -> Iterator[str]:
        for delta in super().stream(**kwargs):
            assert self.permits.acquire(timeout=PATIENCE_S)
            yield delta


@dataclass
class Beat:
    """What one heartbeat pass did to a live stream's hold."""

    received: list[bytes]  # the stream's events
    hold: Hold
    expires_before: float  # the hold's expiry (keeper clock) before the pass
    expires_after: float
    watched_after: int  # holds the keeper still watched after the pass
    next_due: float | None  # when the keeper means to look at the hold again
    lead_s: float  # how long before expiry the keeper extends
    sent_between: tuple[float, float]  # the pass ran between these monotonic instants


def stream_through_keeper(app: Flask, provider: PacedProvider, advance_s: float) -> Beat:
    """Stream /chat; mid-stream, one heartbeat pass with the keeper's clock set to
    ``advance_s`` before the hold's expiry."""
    budgets = budget_service(app)
    clock = KeeperClock()
    budgets.keeper.close()
    budgets.keeper = HoldKeeper(
        budgets.extend,
        ttl_ms=TTL_MS,
        lead_s=budgets.stream_cutoff_s() + budgets.call_budget_s(),
        clock=clock,
        background=False,
    )
    app.extensions["llm"] = provider
    provider.permits.release()
    response = app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True},
        headers=auth_headers("acme"),
        buffered=False,
    )
    chunks = iter(response.response)
    received = [next(chunks)]
    (hold,) = list(budgets.keeper._due)
    expires_before = hold.expires_at
    clock.now = hold.expires_at - advance_s
    started = time.monotonic()
    next_due = budgets.keeper.run_due()
    sent_between = (started, time.monotonic())
    expires_after, watched_after = hold.expires_at, budgets.keeper.watching()
    for _ in range(200):
        provider.permits.release()
    received.extend(chunks)
    response.close()
    return Beat(
        received,
        hold,
        expires_before,
        expires_after,
        watched_after,
        next_due,
        budgets.keeper._lead_s,
        sent_between,
    )


@pytest.fixture
def keeper_beat(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
) -> Callable[..., Beat]:
    """``keeper_beat(change, advance_s)``: :func:`stream_through_keeper` on an app whose
    Cycles is the test server as ``change(forward)`` answers (a responder wrapping it)."""

    def beat(change: Callable[[Responder], Responder], advance_s: float = 1.0) -> Beat:
        stub = cycles_stub(change(forward_to(cycles_server.base_url)))
        return stream_through_keeper(make_app(stub.base_url), PacedProvider(), advance_s)

    return beat


def test_the_heartbeat_extends_a_long_streams_hold(
    recorder: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    app = make_app(recorder.base_url)
    beat = stream_through_keeper(app, PacedProvider(), advance_s=1.0)
    received, hold = beat.received, beat.hold
    assert received[-1].startswith(b"event: done")
    assert hold.extensions == 1
    assert beat.watched_after == 1
    # The server's own remaining time sets the new expiry: about one TTL from now.
    assert beat.expires_after - beat.expires_before > TTL_MS / 1000 - 5
    # Extended: the next look is one lead before the new expiry (not a quick retry).
    assert beat.next_due == beat.expires_after - beat.lead_s
    paths = [request.path.rsplit("/", 1)[-1] for request in recorder.requests]
    assert paths == ["reservations", "extend", "commit"]
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]


def test_a_stream_whose_hold_cannot_be_extended_ends_before_it_lapses(
    keeper_beat: Callable[..., Beat], provisioner: Provisioner
) -> None:
    refusal = cycles_error(409, "MAX_EXTENSIONS_EXCEEDED")
    beat = keeper_beat(lambda forward: answering(forward, "/extend", refusal))
    received, hold = beat.received, beat.hold
    assert not hold.extendable
    assert beat.watched_after == 0  # refused for good: no longer extended
    assert beat.expires_after == beat.expires_before
    assert received[-1].startswith(b"event: error")
    assert b"budget_hold_lapsing" in received[-1]
    assert [chunk.split(b"\n")[0] for chunk in received].count(b"event: delta") == 1
    balance = provisioner.balance("acme")
    assert balance["reserved"] == 0 and balance["spent"] > 0
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]


def test_a_stream_closed_before_its_first_byte_still_settles(
    app: Flask, provisioner: Provisioner
) -> None:
    # A server that finds the client gone before it sends anything closes the body
    # without iterating it, so the stream's own cleanup never runs: closing must settle.
    cycles = budget_service(app)
    with app.test_request_context("/chat"):
        hold = reservations.reserve(cycles, "acme", "chat", estimate())
        call = guard.LlmCall(prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True)
        response = guard.GuardedCall(cycles, hold, call, FakeProvider("fake-model")).stream()
        response.close()
    balance = provisioner.balance("acme")
    assert balance["reserved"] == 0 and balance["spent"] > 0
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
    assert cycles.keeper.watching() == 0


def rewrite(forward: Responder, suffix: str, change: Callable[[dict[str, Any]], None]) -> Responder:
    """Pass requests on; let ``change`` edit the JSON answers to paths ending in ``suffix``."""

    def respond(request: StubRequest) -> StubReply:
        reply = forward(request)
        if request.path.endswith(suffix) and isinstance(reply.body, dict):
            change(reply.body)
        return reply

    return respond


def test_an_extension_without_the_servers_remaining_time_adds_exactly_one_ttl(
    keeper_beat: Callable[..., Beat],
) -> None:
    beat = keeper_beat(  # an older server: no remaining time in its answer
        lambda forward: rewrite(forward, "/extend", lambda body: body.pop("remaining_ttl_ms"))
    )
    assert beat.hold.extensions == 1
    assert beat.expires_after == beat.expires_before + TTL_MS / 1000


def test_a_shorter_lease_than_asked_for_is_the_one_the_guard_keeps(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
) -> None:
    granted_ms = 20_000  # a server may grant less than the TTL asked for

    def shorten(body: dict[str, Any]) -> None:
        body["remaining_ttl_ms"] = granted_ms

    app = make_app(
        cycles_stub(
            rewrite(forward_to(cycles_server.base_url), "/v1/reservations", shorten)
        ).base_url
    )
    before = time.monotonic()
    beat = stream_through_keeper(app, PacedProvider(), advance_s=1.0)
    assert beat.expires_before <= time.monotonic() + granted_ms / 1000
    assert beat.expires_before >= before + granted_ms / 1000 - 5


def test_no_time_left_on_the_hold_means_no_provider_call(
    app: Flask, provisioner: Provisioner
) -> None:
    provider = CountingProvider(model="fake-model")
    app.extensions["llm"] = provider
    cycles = budget_service(app)
    with app.test_request_context("/chat"):
        hold = reservations.reserve(cycles, "acme", "chat", estimate())
        # Less left than one commit needs: waiting on the provider would outlive the hold.
        hold.expires_at = time.monotonic() + cycles.call_budget_s()
        call = guard.LlmCall(prompt=PROMPT, max_tokens=MAX_TOKENS)
        with pytest.raises(ApiError) as refused:
            guard.GuardedCall(cycles, hold, call, provider).complete()
    assert refused.value.status == 504
    assert provider.calls == 0
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (estimate(), 0)


def test_a_stream_stops_its_provider_before_it_commits(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_stub: Callable[[Responder], CyclesStub],
) -> None:
    events: list[str] = []
    forward = forward_to(cycles_server.base_url)

    def record_commits(request: StubRequest) -> StubReply:
        if request.path.endswith("/commit"):
            events.append("commit")
        return forward(request)

    class Recording(PacedProvider):
        def stream(self, **kwargs: Any) -> Iterator[str]:
            try:
                yield from super().stream(**kwargs)
            finally:
                events.append("provider closed")

    app = make_app(cycles_stub(record_commits).base_url)
    provider = Recording()
    app.extensions["llm"] = provider
    provider.permits.release()
    response = app.test_client().post(
        "/chat",
        json={"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True},
        headers=auth_headers("acme"),
        buffered=False,
    )
    next(iter(response.response))
    response.close()  # the client hangs up after the first delta
    assert events == ["provider closed", "commit"]


def test_usage_at_exactly_max_tokens_is_not_reported_as_over(
    app: Flask, provisioner: Provisioner, caplog: pytest.LogCaptureFixture
) -> None:
    class Exact(FakeProvider):
        def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Any:
            done = super().complete(prompt=prompt, max_tokens=max_tokens, system=system)
            return type(done)(done.text, done.input_tokens, max_tokens, done.model)

    app.extensions["llm"] = Exact("fake-model")
    assert chat(app).status_code == 200
    assert not any("more output tokens" in r.getMessage() for r in caplog.records)


def test_the_new_expiry_is_what_the_server_says_is_left(
    keeper_beat: Callable[..., Beat],
) -> None:
    left_ms = 90_000

    def report(body: dict[str, Any]) -> None:
        body["remaining_ttl_ms"] = left_ms

    beat = keeper_beat(lambda forward: rewrite(forward, "/extend", report))
    sent_after, answered_before = beat.sent_between
    # Counted from when the extension was sent: never later than the server's expiry.
    assert sent_after + left_ms / 1000 <= beat.expires_after <= answered_before + left_ms / 1000


def test_a_failed_extension_is_tried_again_while_the_hold_lasts(
    keeper_beat: Callable[..., Beat],
) -> None:
    failure = cycles_error(500, "INTERNAL_ERROR")
    # A beat as the keeper makes it, well before expiry (its lead is 47 s here).
    beat = keeper_beat(lambda forward: answering(forward, "/extend", failure), advance_s=45.0)
    assert beat.hold.extendable  # a 5xx may pass: not given up on
    assert beat.watched_after == 1
    # Tried again a second later, long before the hold runs out; the stream went on.
    assert beat.next_due == beat.expires_before - 45.0 + 1.0
    assert beat.received[-1].startswith(b"event: done")


def test_a_hold_is_settled_once() -> None:
    hold = Hold("acme", "chat", 10, "enforce", reservation_id="r1")
    assert hold.claim_settlement() is True
    assert hold.claim_settlement() is False
    assert hold.settled
