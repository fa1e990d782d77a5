"""POST /chat with "stream": true, over a real socket: events out, the ledger charged exactly."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from conftest import CountingProvider, Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import ProviderError, StreamProgress
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from {{ cookiecutter.package_name }}.money import usd_text

PROMPT = "Tell me, in a good many words, why budgets for language models matter at all."
MAX_TOKENS = 48
# Long enough for every wait below on a loaded machine; the tests never assert a duration.
PATIENCE_S = 30.0

Serve = Callable[[Flask], str]


def post(base_url: str, body: dict[str, Any], tenant: str = "acme") -> http.client.HTTPResponse:
    """POST /chat on a real connection; the caller reads (or abandons) the response."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=PATIENCE_S)
    headers = {"Content-Type": "application/json", **auth_headers(tenant)}
    connection.request("POST", "/chat", body=json.dumps(body), headers=headers)
    return connection.getresponse()


def events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of ``response`` as (name, data), as they arrive."""
    name, data = "message", ""
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data += line[len("data: ") :]
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


def settled(provisioner: Provisioner, tenant: str = "acme") -> dict[str, Any]:
    """``tenant``'s balance once nothing is held any more (streams settle after the last byte)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        balance = provisioner.balance(tenant)
        if balance["reserved"] == 0 or time.monotonic() > deadline:
            return balance
        time.sleep(0.01)


def expected_stream(prompt: str, max_tokens: int) -> tuple[list[str], StreamProgress]:
    progress = StreamProgress()
    deltas = list(
        FakeProvider("fake-model").stream(prompt=prompt, max_tokens=max_tokens, progress=progress)
    )
    return deltas, progress


def test_a_stream_sends_every_delta_then_the_usage_and_charges_it(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FakeProvider("fake-model")
    response = post(serve(app), {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True})
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    received = list(events(response))

    deltas, progress = expected_stream(PROMPT, MAX_TOKENS)
    assert [name for name, _ in received] == ["delta"] * len(deltas) + ["done"]
    assert [data["text"] for _, data in received[:-1]] == deltas
    assert progress.input_tokens is not None and progress.output_tokens is not None
    cost = pricing.cost(progress.input_tokens, progress.output_tokens)
    # What remains after the charge, as the ledger holds it.
    remaining = provisioner.balance("acme")["remaining"]
    assert received[-1][1] == {
        "type": "done",
        "model": "fake-model",
        "max_tokens": MAX_TOKENS,
        "usage": {"input_tokens": progress.input_tokens, "output_tokens": progress.output_tokens},
        "cost_usd_microcents": cost,
        "remaining_microcents": remaining,
        "remaining_usd": usd_text(remaining),
    }
    balance = settled(provisioner)
    assert (balance["spent"], balance["reserved"]) == (cost, 0)
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]


def test_a_denied_or_bad_stream_is_answered_as_json_before_any_event(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    base_url = serve(app)
    bad = post(base_url, {"prompt": PROMPT, "stream": "yes"})
    assert (bad.status, bad.getheader("Content-Type")) == (400, "application/json")
    assert json.loads(bad.read())["error"] == "invalid_request"

    provisioner.set_budget("acme", allocated=1)
    denied = post(base_url, {"prompt": PROMPT, "stream": True})
    assert (denied.status, denied.getheader("Content-Type")) == (402, "application/json")
    assert json.loads(denied.read())["error"] == "budget_exceeded"
    assert provisioner.reservation_statuses("acme") == []


class PacedProvider(FakeProvider):
    """Streams one delta per permit, so a test decides how far the answer has got."""

    def __init__(self) -> None:
        super().__init__("fake-model")
        self.permits = threading.Semaphore(0)
        self.closed = threading.Event()
        self.progress: StreamProgress | None = None

    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, system: str | None = None
    ) -> Iterator[str]:
        self.progress = progress
        inner = super().stream(
            prompt=prompt, max_tokens=max_tokens, progress=progress, system=system
        )
        try:
            for delta in inner:
                assert self.permits.acquire(timeout=PATIENCE_S)
                yield delta
        finally:
            self.closed.set()


def test_a_client_that_hangs_up_is_charged_for_what_was_generated(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    provider = PacedProvider()
    app.extensions["llm"] = provider
    provider.permits.release()  # the first delta comes before the response starts
    response = post(serve(app), {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True})
    name, _ = next(events(response))
    assert name == "delta"
    response.close()  # hang up after the first delta
    # Let the provider go on: the server notices the closed socket on a write and stops.
    for _ in range(200):
        provider.permits.release()
    assert provider.closed.wait(PATIENCE_S), "the provider's stream was never closed"

    balance = settled(provisioner)
    assert balance["reserved"] == 0
    assert provider.progress is not None and provider.progress.input_tokens is not None
    generated = provider.progress.output_tokens or 0
    _, whole = expected_stream(PROMPT, MAX_TOKENS)
    assert whole.output_tokens is not None
    # Charged for what was generated until the hang-up: more than nothing, less than it all.
    assert 0 < generated < whole.output_tokens
    assert balance["spent"] == pricing.cost(provider.progress.input_tokens, generated)
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]


class FailingMidway(FakeProvider):
    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, system: str | None = None
    ) -> Iterator[str]:
        inner = super().stream(
            prompt=prompt, max_tokens=max_tokens, progress=progress, system=system
        )
        yield next(inner)
        yield next(inner)
        raise ProviderError("vendor said: account 42 is out")


def test_a_provider_failing_midway_ends_with_an_error_event_and_charges_the_deltas(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FailingMidway("fake-model")
    response = post(serve(app), {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": True})
    received = list(events(response))
    assert [name for name, _ in received] == ["delta", "delta", "error"]
    assert received[-1][1]["error"] == "provider_error"
    assert "account 42" not in json.dumps(received)
    deltas, progress = expected_stream(PROMPT, MAX_TOKENS)
    assert progress.input_tokens is not None
    output_tokens = -(-len("".join(deltas[:2])) // 4)
    balance = settled(provisioner)
    assert (balance["spent"], balance["reserved"]) == (
        pricing.cost(progress.input_tokens, output_tokens),
        0,
    )


def test_a_provider_failing_at_once_is_a_json_502_and_releases_the_hold(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FakeProvider("fake-model", fail_with="vendor is down")
    response = post(serve(app), {"prompt": PROMPT, "stream": True})
    assert (response.status, response.getheader("Content-Type")) == (502, "application/json")
    assert json.loads(response.read())["error"] == "provider_error"
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (0, 0)
    assert provisioner.reservation_statuses("acme") == ["RELEASED"]


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_streams_spend_only_their_own_tenants_budget(
    app: Flask, serve: Serve, provisioner: Provisioner, tenant: str
) -> None:
    provider = CountingProvider(model="fake-model")
    app.extensions["llm"] = provider
    response = post(serve(app), {"prompt": PROMPT, "max_tokens": 8, "stream": True}, tenant)
    assert [name for name, _ in events(response)][-1] == "done"
    other = "globex" if tenant == "acme" else "acme"
    assert settled(provisioner, tenant)["spent"] > 0
    assert provisioner.balance(other)["spent"] == 0
    assert provider.calls == 1


class FailingAfterCounting(FakeProvider):
    """Counts output (as a vendor's usage event would) and fails before any text arrives."""

    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, system: str | None = None
    ) -> Iterator[str]:
        progress.input_tokens, progress.output_tokens = 20, 3
        raise ProviderError("overloaded")
        yield ""  # a generator, like every provider's stream


def test_a_provider_that_produced_tokens_before_failing_is_charged_not_released(
    app: Flask, serve: Serve, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = FailingAfterCounting("fake-model")
    response = post(serve(app), {"prompt": PROMPT, "stream": True})
    assert (response.status, response.getheader("Content-Type")) == (502, "application/json")
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (pricing.cost(20, 3), 0)
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
