"""Money: US dollars in and out of integer microcents, exactly, with errors a person reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from {{ cookiecutter.package_name }} import money


def test_a_dollar_is_a_hundred_million_microcents_in_the_cycles_unit() -> None:
    assert money.MICROCENTS_PER_USD == 10**8
    assert money.UNIT == "USD_MICROCENTS"


@pytest.mark.parametrize(
    ("text", "microcents"),
    [("0", 0), ("5.00", 500_000_000), (" 2.5 ", 250_000_000), ("0.00000001", 1), ("1e2", 10**10)],
)
def test_usd_to_microcents_is_exact(text: str, microcents: int) -> None:
    assert money.usd_to_microcents(text) == microcents


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lots", "not an amount of US dollars"),
        ("-1", "not an amount of US dollars"),
        ("NaN", "not an amount of US dollars"),
        ("Infinity", "not an amount of US dollars"),
        ("0.000000001", "more than 8 decimals"),
    ],
)
def test_usd_to_microcents_refuses_what_is_not_money(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        money.usd_to_microcents(text)


@pytest.mark.parametrize(
    ("microcents", "shown"),
    [(0, "$0.00"), (750_000_000, "$7.50"), (1, "$0.00000001"), (-250_000_000, "-$2.50")],
)
def test_format_usd(microcents: int, shown: str) -> None:
    assert money.format_usd(microcents) == shown


@given(st.integers(-(10**15), 10**15))
def test_format_usd_round_trips(microcents: int) -> None:
    shown = money.format_usd(microcents)
    sign = -1 if shown.startswith("-") else 1
    assert sign * money.usd_to_microcents(shown.lstrip("-").removeprefix("$")) == microcents


@pytest.mark.parametrize(
    ("microcents", "text"),
    [
        (0, "0.00"),
        (500_000_000, "5.00"),
        (1_234_500, "0.012345"),
        (1, "0.00000001"),
        (123_456_789, "1.23456789"),
        (-50_000_000, "-0.50"),
        (10**17, "1000000000.00"),
    ],
)
def test_usd_text_is_exact_with_two_to_eight_decimals(microcents: int, text: str) -> None:
    assert money.usd_text(microcents) == text


@given(st.integers(-(10**15), 10**15))
def test_usd_text_round_trips(microcents: int) -> None:
    text = money.usd_text(microcents)
    sign = -1 if text.startswith("-") else 1
    assert sign * money.usd_to_microcents(text.lstrip("-")) == microcents
