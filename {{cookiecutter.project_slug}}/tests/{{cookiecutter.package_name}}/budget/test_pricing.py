"""The pricing module: exact integer microcents, rounding up, estimate >= cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from {{ cookiecutter.package_name }}.budget import pricing

INPUT_USD_PER_MILLION = Decimal("{{ cookiecutter.input_price_per_million_usd }}")
OUTPUT_USD_PER_MILLION = Decimal("{{ cookiecutter.output_price_per_million_usd }}")
CACHED_USD_PER_MILLION = Decimal("{{ cookiecutter.cached_input_price_per_million_usd }}")
WRITE_USD_PER_MILLION = Decimal("{{ cookiecutter.cache_write_price_per_million_usd }}")


def exact_cost_microcents(
    input_tokens: int, output_tokens: int, cached: int = 0, written: int = 0
) -> Decimal:
    """The same cost computed independently, in exact decimal arithmetic."""
    usd = (
        (input_tokens - cached - written) * INPUT_USD_PER_MILLION
        + cached * CACHED_USD_PER_MILLION
        + written * WRITE_USD_PER_MILLION
        + output_tokens * OUTPUT_USD_PER_MILLION
    ) / 1_000_000
    return usd * 100_000_000


def test_prices_are_the_prompted_ones_in_microcents() -> None:
    assert pricing.MODEL == "{{ cookiecutter.model }}"
    assert Decimal(pricing.INPUT_MICROCENTS_PER_MILLION) == INPUT_USD_PER_MILLION * 10**8
    assert Decimal(pricing.OUTPUT_MICROCENTS_PER_MILLION) == OUTPUT_USD_PER_MILLION * 10**8
    assert Decimal(pricing.CACHED_INPUT_MICROCENTS_PER_MILLION) == CACHED_USD_PER_MILLION * 10**8
    assert Decimal(pricing.CACHE_WRITE_MICROCENTS_PER_MILLION) == WRITE_USD_PER_MILLION * 10**8


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_cost_is_the_exact_price_rounded_up_to_a_microcent(inp: int, out: int) -> None:
    exact = exact_cost_microcents(inp, out)
    charged = pricing.cost(inp, out)
    assert isinstance(charged, int)
    assert charged - 1 < exact <= charged


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.data())
def test_cached_input_is_billed_at_the_cached_price(
    inp: int, out: int, data: st.DataObject
) -> None:
    cached = data.draw(st.integers(0, inp))
    charged = pricing.cost(inp, out, cached_input_tokens=cached)
    assert charged - 1 < exact_cost_microcents(inp, out, cached) <= charged
    # The reservation prices all input at the full rate: never below a cached call.
    assert charged <= pricing.cost(inp, out)


PRICES_PER_MILLION = st.integers(0, 10**12)  # up to $10,000 per million tokens


@given(PRICES_PER_MILLION, PRICES_PER_MILLION, st.integers(0, 10**7), st.integers(0, 10**7))
def test_cost_and_estimate_use_the_prices_they_are_given(
    input_price: int, output_price: int, inp: int, out: int
) -> None:
    """The app passes the running model's prices (Settings.llm_prices), not the generated ones."""
    prices = pricing.ModelPrices("other-model", input_price, input_price, output_price, "test")
    exact = Decimal(inp * input_price + out * output_price) / 1_000_000
    charged = pricing.cost(inp, out, prices=prices)
    assert charged - 1 < exact <= charged
    prompt = "x" * (inp % 10_000)
    bound = pricing.estimate(prompt, max_tokens=out, prices=prices)
    assert bound == pricing.cost(len(prompt) + pricing.MESSAGE_OVERHEAD_TOKENS, out, prices=prices)


def test_cached_tokens_are_part_of_the_input() -> None:
    with pytest.raises(ValueError, match="part of the input"):
        pricing.cost(10, 0, cached_input_tokens=11)
    with pytest.raises(ValueError, match="part of the input"):
        pricing.cost(10, 0, cache_write_tokens=11)
    with pytest.raises(ValueError, match="part of the input"):
        pricing.cost(10, 0, cached_input_tokens=6, cache_write_tokens=5)
    for kind in ("cached_input_tokens", "cache_write_tokens"):
        with pytest.raises(ValueError, match="negative"):
            pricing.cost(10, 0, **{kind: -1})


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.data())
def test_cache_writes_and_reads_are_billed_at_their_own_prices(
    inp: int, out: int, data: st.DataObject
) -> None:
    written = data.draw(st.integers(0, inp))
    cached = data.draw(st.integers(0, inp - written))
    charged = pricing.cost(inp, out, cached_input_tokens=cached, cache_write_tokens=written)
    assert charged - 1 < exact_cost_microcents(inp, out, cached, written) <= charged


def test_a_million_cache_writes_cost_the_prompted_cache_write_price() -> None:
    million = 1_000_000
    assert pricing.cost(million, 0, cache_write_tokens=million) == (
        pricing.CACHE_WRITE_MICROCENTS_PER_MILLION
    )
    assert pricing.CACHE_WRITE_MICROCENTS_PER_MILLION >= pricing.INPUT_MICROCENTS_PER_MILLION


@given(st.text(max_size=2000), st.integers(1, 100_000), st.data())
def test_estimate_bounds_usage_whatever_part_of_the_prompt_is_read_from_the_cache(
    prompt: str, max_tokens: int, data: st.DataObject
) -> None:
    """Cache reads cost less than plain input (the app asks for no cache writes)."""
    used_input = data.draw(st.integers(0, pricing.max_input_tokens(prompt)))
    cached = data.draw(st.integers(0, used_input))
    used = pricing.cost(used_input, max_tokens, cached_input_tokens=cached)
    assert used <= pricing.estimate(prompt, max_tokens=max_tokens)


def test_one_million_tokens_cost_the_prompted_price() -> None:
    assert pricing.cost(1_000_000, 0) == pricing.INPUT_MICROCENTS_PER_MILLION
    assert pricing.cost(0, 1_000_000) == pricing.OUTPUT_MICROCENTS_PER_MILLION
    assert pricing.cost(0, 0) == 0


def test_negative_token_counts_are_rejected() -> None:
    for args in ((-1, 0), (0, -1)):
        try:
            pricing.cost(*args)
        except ValueError:
            continue
        raise AssertionError(f"cost{args} did not raise")


@given(st.text(max_size=2000), st.integers(1, 100_000), st.integers(0, 100_000))
def test_estimate_bounds_any_usage_within_limits(prompt: str, max_tokens: int, out: int) -> None:
    """Any real usage (input <= bytes + overhead, output <= max_tokens) costs <= estimate."""
    used_output = min(out, max_tokens)
    used_input = len(prompt.encode("utf-8")) + pricing.MESSAGE_OVERHEAD_TOKENS
    assert pricing.cost(used_input, used_output) <= pricing.estimate(prompt, max_tokens=max_tokens)


def test_estimate_counts_every_message() -> None:
    one = pricing.estimate("hello", max_tokens=10)
    two = pricing.estimate("hello", "system prompt", max_tokens=10)
    assert two >= one
    assert pricing.max_input_tokens("héllo") == len("héllo".encode()) + 8
