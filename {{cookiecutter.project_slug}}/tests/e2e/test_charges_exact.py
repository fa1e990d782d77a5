"""What Cycles is asked to hold and charge, computed here without the pricing module.

Every expectation comes from the rule the README states: prices as prompted (USD per
million tokens), an estimate of the prompt's UTF-8 bytes plus 8 tokens per message plus
``max_tokens`` at the output price, and the fake model's usage of one token per four
characters (plus 8 per message). Costs round up to a whole microcent. A pricing bug
therefore moves what the app sends, never what these tests expect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal

import pytest
from flask import Flask

from conftest import CyclesStub, Provisioner, Responder, auth_headers, forward_to
from localcycles import LocalCyclesServer

# As prompted when this project was generated.
INPUT_USD_PER_MILLION = Decimal("{{ cookiecutter.input_price_per_million_usd }}")
OUTPUT_USD_PER_MILLION = Decimal("{{ cookiecutter.output_price_per_million_usd }}")
MICROCENTS_PER_USD = 100_000_000
OVERHEAD_TOKENS = 8  # per message, in the estimate and in the fake model's usage
SUMMARY_INSTRUCTIONS = (
    "Summarize the user's text in a few sentences. Keep facts, names and numbers exact."
)
PROMPT = "Naïve café owners price croissants at €2.50 — is that fair? 🥐"


def usd_cost(input_tokens: int, output_tokens: int) -> int:
    usd = input_tokens * INPUT_USD_PER_MILLION + output_tokens * OUTPUT_USD_PER_MILLION
    exact = usd * MICROCENTS_PER_USD / 1_000_000
    return math.ceil(exact)


def estimate(texts: list[str], max_tokens: int) -> int:
    input_bound = sum(len(text.encode("utf-8")) + OVERHEAD_TOKENS for text in texts)
    return usd_cost(input_bound, max_tokens)


def fake_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@pytest.fixture
def recorded(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
    make_app: Callable[..., Flask],
) -> tuple[CyclesStub, Flask]:
    stub = cycles_stub(forward_to(cycles_server.base_url))
    return stub, make_app(stub.base_url)


@pytest.mark.parametrize("max_tokens", [1, 7, 64])
def test_chat_holds_the_estimate_and_charges_the_usage(
    recorded: tuple[CyclesStub, Flask], provisioner: Provisioner, max_tokens: int
) -> None:
    stub, app = recorded
    response = app.test_client().post(
        "/chat", json={"prompt": PROMPT, "max_tokens": max_tokens}, headers=auth_headers("acme")
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    input_tokens = fake_tokens(PROMPT) + OVERHEAD_TOKENS
    output_tokens = fake_tokens(body["text"])
    assert body["usage"] == {"input_tokens": input_tokens, "output_tokens": output_tokens}
    charge = usd_cost(input_tokens, output_tokens)
    assert body["cost_usd_microcents"] == charge

    (reserve,) = stub.bodies("/v1/reservations")
    assert reserve["estimate"]["amount"] == estimate([PROMPT], max_tokens)
    (commit,) = stub.bodies("/commit")
    assert commit["actual"]["amount"] == charge
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (charge, 0)


def test_summarize_counts_its_instructions(
    recorded: tuple[CyclesStub, Flask], provisioner: Provisioner
) -> None:
    stub, app = recorded
    max_tokens = app.extensions["settings"].default_max_tokens
    response = app.test_client().post(
        "/summarize", json={"text": PROMPT}, headers=auth_headers("globex")
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    input_tokens = sum(fake_tokens(t) + OVERHEAD_TOKENS for t in (SUMMARY_INSTRUCTIONS, PROMPT))
    charge = usd_cost(input_tokens, fake_tokens(body["summary"]))
    assert body["cost_usd_microcents"] == charge
    (reserve,) = stub.bodies("/v1/reservations")
    assert reserve["estimate"]["amount"] == estimate([SUMMARY_INSTRUCTIONS, PROMPT], max_tokens)
    assert provisioner.balance("globex")["spent"] == charge
    assert provisioner.balance("acme")["spent"] == 0


def test_prices_that_are_not_whole_microcents_round_up_per_call() -> None:
    # One token at each price: the charge is the exact amount rounded up, never down.
    one_input = INPUT_USD_PER_MILLION * MICROCENTS_PER_USD / 1_000_000
    assert usd_cost(1, 0) == math.ceil(one_input)
    assert usd_cost(1, 0) >= one_input
