"""The template's Jinja filters, tested directly: money must be exact, escapes must round-trip."""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import local_extensions as filters


@pytest.mark.parametrize(
    ("usd", "microcents"),
    [
        ("2.50", 250_000_000),
        ("10.00", 1_000_000_000),
        ("0.075", 7_500_000),
        ("0.30", 30_000_000),
        ("0.00000001", 1),
        ("0", 0),
        (" 1.5 ", 150_000_000),
        ("123456789.12345678", 12_345_678_912_345_678),
    ],
)
def test_usd_to_microcents_is_exact(usd: str, microcents: int) -> None:
    assert filters.usd_to_microcents(usd) == microcents


@pytest.mark.parametrize("usd", ["0.000000001", "1.123456789", "abc", "", "1e-9"])
def test_usd_to_microcents_refuses_what_it_cannot_convert_exactly(usd: str) -> None:
    with pytest.raises(ValueError):
        filters.usd_to_microcents(usd)


@given(st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False))
def test_usd_to_microcents_agrees_with_decimal_arithmetic(usd: Decimal) -> None:
    assert filters.usd_to_microcents(str(usd)) == int(usd * 100_000_000)


@given(st.text())
def test_toml_str_round_trips_through_a_toml_parser(value: str) -> None:
    assert tomllib.loads(f"x = {filters.toml_str(value)}")["x"] == value


@given(st.text())
def test_one_line_leaves_no_line_breaks(value: str) -> None:
    line = filters.one_line(value)
    assert line == " ".join(value.split())
    assert not any(char in line for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("Acme *Labs*", "Acme \\*Labs\\*"),
        ("<script>", "\\<script\\>"),
        ("a_b [c](d)", "a\\_b \\[c\\]\\(d\\)"),
        ("plain text", "plain text"),
        ("two\nlines", "two lines"),
    ],
)
def test_md_text_escapes_markdown_and_html(text: str, escaped: str) -> None:
    assert filters.md_text(text) == escaped


def test_py_int_groups_thousands() -> None:
    assert filters.py_int(250_000_000) == "250_000_000"
    assert filters.py_int(7) == "7"
    assert int(filters.py_int(12_345_678)) == 12_345_678


def test_every_default_model_has_prices_that_convert_exactly() -> None:
    table = json.loads(filters.PRICE_TABLE.read_text())
    for provider, model in table["defaults"].items():
        assert filters.default_model(provider) == model
        for kind in ("input", "output"):
            price = filters.model_price(model, kind)
            assert price, f"{model} has no {kind} price"
            assert filters.usd_to_microcents(price) >= 0


def test_a_cache_write_price_comes_from_the_table_else_the_fallback() -> None:
    table = json.loads(filters.PRICE_TABLE.read_text())
    anthropic = table["defaults"]["anthropic"]
    expected = table["models"][anthropic]["cache_write"]
    assert filters.model_price(anthropic, "cache_write") == expected
    assert "cache_write" not in table["models"]["fake-model"]
    assert filters.model_price("fake-model", "cache_write", "2.50") == "2.50"


def test_an_unknown_model_gets_no_price() -> None:
    assert filters.model_prices("no-such-model-anywhere") is None
    assert filters.model_price("no-such-model-anywhere", "input") == ""
    with pytest.raises(ValueError):
        filters.model_price("gpt-4o", "wholesale")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "fake"])
def test_a_bake_ships_its_providers_part_of_the_price_table(provider: str) -> None:
    table = json.loads(filters.PRICE_TABLE.read_text())
    shipped = json.loads(filters.provider_price_table(provider))
    models = {name: row for name, row in table["models"].items() if row["provider"] == provider}
    assert models and shipped["models"] == models
    assert shipped["aliases"] == {a: m for a, m in table["aliases"].items() if m in models}
    assert shipped["provider"] == provider
    assert (shipped["generated_on"], shipped["unit"]) == (table["generated_on"], table["unit"])
    licence = (filters.PRICE_TABLE.parent / "LICENSE-genai-prices").read_text()
    assert shipped["licence"] == licence and table["genai_prices_version"] in shipped["source"]
    with pytest.raises(ValueError, match="no model of provider"):
        filters.provider_price_table("acme-ai")
