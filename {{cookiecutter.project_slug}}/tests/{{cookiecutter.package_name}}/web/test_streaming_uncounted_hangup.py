"""A client hangs up a stream whose provider has not reported usage yet (OpenAI sends it in
its last chunk, Anthropic's output count may lag the text): the charge is still at least
the bytes that were generated, capped at ``max_tokens``, with the input's byte bound.

Over a real socket against the embedded Cycles server; the provider is paced by the test,
so the hang-up comes before the provider would ever count anything.
"""

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

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import StreamProgress
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider

PROMPT = "Count the words of this sentence, then count them again."
DELTA = "twelve bytes"  # 12 UTF-8 bytes per delta
DELTAS = 6  # 72 bytes in all: below the first case's max_tokens
# Long enough for every wait below on a loaded machine; the tests never assert a duration.
PATIENCE_S = 30.0


class UncountedProvider(FakeProvider):
    """Streams ``DELTAS`` fixed deltas, one per permit, and never reports usage."""

    def __init__(self) -> None:
        super().__init__("fake-model")
        self.permits = threading.Semaphore(0)
        self.closed = threading.Event()
        self.progress: StreamProgress | None = None

    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, system: str | None = None
    ) -> Iterator[str]:
        self.progress = progress
        try:
            for _ in range(DELTAS):
                assert self.permits.acquire(timeout=PATIENCE_S)
                progress.add_text(DELTA)
                yield DELTA
        finally:
            self.closed.set()


def hang_up_after_first_delta(base_url: str, max_tokens: int) -> None:
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=PATIENCE_S)
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    headers = {"Content-Type": "application/json", **auth_headers("acme")}
    connection.request("POST", "/chat", body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"event: delta")
    connection.close()  # hang up: the provider has counted nothing yet


def settled(provisioner: Provisioner) -> dict[str, Any]:
    """acme's balance once nothing is held any more (streams settle after the last byte)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        balance = provisioner.balance("acme")
        if balance["reserved"] == 0 or time.monotonic() > deadline:
            return balance
        time.sleep(0.01)


@pytest.mark.parametrize(
    "max_tokens",
    [
        pytest.param(100, id="the bytes sent"),
        pytest.param(5, id="capped at max_tokens"),
    ],
)
def test_a_hang_up_before_usage_is_charged_the_bytes_sent_capped_at_max_tokens(
    app: Flask, serve: Callable[[Flask], str], provisioner: Provisioner, max_tokens: int
) -> None:
    provider = UncountedProvider()
    app.extensions["llm"] = provider
    provider.permits.release()  # the first delta comes before the response starts
    hang_up_after_first_delta(serve(app), max_tokens)
    # Let the provider go on: the server notices the closed socket on a write and stops.
    for _ in range(DELTAS):
        provider.permits.release()
    assert provider.closed.wait(PATIENCE_S), "the provider's stream was never closed"

    balance = settled(provisioner)
    assert provider.progress is not None and provider.progress.output_tokens is None
    sent = provider.progress.text_bytes
    assert sent >= len(DELTA.encode())
    output = min(sent, max_tokens)
    assert output == (5 if max_tokens == 5 else sent)
    # The provider counted no input either: the prompt's byte bound is charged for it.
    expected = pricing.cost(pricing.max_input_tokens(PROMPT), output)
    assert (balance["spent"], balance["reserved"]) == (expected, 0)
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
