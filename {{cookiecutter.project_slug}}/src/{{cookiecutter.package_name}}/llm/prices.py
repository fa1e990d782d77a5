"""What the running model costs: the generation answers, the price table, or the settings.

The model that runs (``LLM_MODEL``) is the model that is priced. The model chosen when the
project was generated keeps the prices given then (below). Any other model is priced from
``prices.json`` beside this module: the chosen provider's part of the template's price
table (standard prices, USD per million tokens). ``LLM_INPUT_PRICE_PER_MILLION_USD``,
``LLM_OUTPUT_PRICE_PER_MILLION_USD``, ``LLM_CACHED_INPUT_PRICE_PER_MILLION_USD`` and
``LLM_CACHE_WRITE_PRICE_PER_MILLION_USD`` replace any of those figures, and price a model
the table does not know; without them such a model is refused at start-up, never guessed,
so no call is billed at another model's rates.

Prices are integer USD microcents per million tokens ($1 = 100,000,000 microcents), the
unit of ``pricing``; a price text is accepted exactly as the generation prompts accept it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

# The model and prices answered when the project was generated, USD per million tokens:
# input ${{ cookiecutter.input_price_per_million_usd }},
# cached input ${{ cookiecutter.cached_input_price_per_million_usd }},
# cache write ${{ cookiecutter.cache_write_price_per_million_usd }},
# output ${{ cookiecutter.output_price_per_million_usd }}.
MODEL = "{{ cookiecutter.model }}"
INPUT_MICROCENTS_PER_MILLION = {{ cookiecutter.input_price_per_million_usd | usd_to_microcents | py_int }}
CACHED_INPUT_MICROCENTS_PER_MILLION = {{ cookiecutter.cached_input_price_per_million_usd | usd_to_microcents | py_int }}
CACHE_WRITE_MICROCENTS_PER_MILLION = {{ cookiecutter.cache_write_price_per_million_usd | usd_to_microcents | py_int }}
OUTPUT_MICROCENTS_PER_MILLION = {{ cookiecutter.output_price_per_million_usd | usd_to_microcents | py_int }}

MICROCENTS_PER_USD = 100_000_000
# What the generation prompts accept for a price: plain decimals, at most 8 decimals (one
# microcent per million tokens), at most $10,000 per million tokens.
PRICE_TEXT_RE = re.compile(r"[0-9]+(?:\.([0-9]+))?")
PRICE_DECIMAL_PLACES = 8
MAX_USD_PER_MILLION = Decimal(10_000)

# The settings that replace a figure, by the kind of tokens they price.
INPUT_PRICE = "LLM_INPUT_PRICE_PER_MILLION_USD"
OUTPUT_PRICE = "LLM_OUTPUT_PRICE_PER_MILLION_USD"
CACHED_INPUT_PRICE = "LLM_CACHED_INPUT_PRICE_PER_MILLION_USD"
CACHE_WRITE_PRICE = "LLM_CACHE_WRITE_PRICE_PER_MILLION_USD"
PRICE_SETTINGS = {
    "input": INPUT_PRICE,
    "output": OUTPUT_PRICE,
    "cached_input": CACHED_INPUT_PRICE,
    "cache_write": CACHE_WRITE_PRICE,
}
TABLE_FILE = "prices.json"


@dataclass(frozen=True)
class ModelPrices:
    """One model's prices in USD microcents per million tokens."""

    model: str
    input: int
    cached_input: int  # a prompt-cache read; never above ``input`` (the estimate's bound)
    output: int
    source: str  # where the figures came from, for the start-up line and errors
    # A prompt-cache write (Anthropic's ``cache_creation_input_tokens``, 5-minute
    # lifetime); never below ``input``. Last, with a default, so that a price without
    # caching is written as before: writes then cost the input price.
    cache_write: int | None = None

    @property
    def cache_write_or_input(self) -> int:
        """What a cache-write token costs: its own price, else the input price."""
        return self.input if self.cache_write is None else self.cache_write


GENERATED = ModelPrices(
    MODEL,
    INPUT_MICROCENTS_PER_MILLION,
    CACHED_INPUT_MICROCENTS_PER_MILLION,
    OUTPUT_MICROCENTS_PER_MILLION,
    "generation answers",
    CACHE_WRITE_MICROCENTS_PER_MILLION,
)


class PriceProblem(ValueError):
    """A model cannot be priced; ``setting`` names the variable that would fix it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@functools.cache
def table() -> dict[str, Any]:
    """The shipped price table (read once; it is package data, installed with the code)."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def canonical(model: str) -> str:
    """The table's name for ``model`` (dated variants and other aliases map to one entry)."""
    aliases: dict[str, str] = table()["aliases"]
    return aliases.get(model, model)


def usd_per_million(text: str) -> int:
    """``"2.50"`` (USD per million tokens) as integer microcents, validated as the prompts do.

    Raises ValueError whose message says what is expected.
    """
    match = PRICE_TEXT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected a non-negative amount of US dollars like 2.50")
    if len(match.group(1) or "") > PRICE_DECIMAL_PLACES:
        raise ValueError(f"expected at most {PRICE_DECIMAL_PLACES} decimal places (1 microcent)")
    value = Decimal(match.group(0))
    if value > MAX_USD_PER_MILLION:
        raise ValueError(f"expected at most {MAX_USD_PER_MILLION} US dollars per million tokens")
    return int(value * MICROCENTS_PER_USD)


def listed(model: str) -> ModelPrices | None:
    """``model``'s prices from the generation answers or the price table; None if unknown."""
    if canonical(model) == canonical(MODEL):
        return dataclasses.replace(GENERATED, model=model)
    row: dict[str, str] | None = table()["models"].get(canonical(model))
    if row is None:
        return None
    # No published cache price: reads and writes are billed as input (as the prompts do).
    input_price = usd_per_million(row["input"])
    cached = usd_per_million(row["cached_input"]) if "cached_input" in row else input_price
    write = usd_per_million(row["cache_write"]) if "cache_write" in row else input_price
    output = usd_per_million(row["output"])
    return ModelPrices(model, input_price, cached, output, "price table", write)


def priced(model: str, explicit: Mapping[str, int]) -> ModelPrices:
    """``model``'s prices with ``explicit`` ones (by kind, as PRICE_SETTINGS) on top.

    Raises :class:`PriceProblem` for a model the table does not know and whose input and
    output prices are not both given, for a cached price above the input price, or for a
    cache-write price below it.
    """
    found = listed(model)
    if found is None:
        if "input" not in explicit or "output" not in explicit:
            raise PriceProblem(
                "LLM_MODEL",
                f"LLM_MODEL={_shown(model)} has no price in this project's price table "
                f"(llm/{TABLE_FILE}, {table()['provider']} models): set {INPUT_PRICE} and "
                f"{OUTPUT_PRICE} (US dollars per million tokens), or choose a listed model",
            )
        # An unlisted model's cache reads and writes cost the input price unless told
        # otherwise.
        found = ModelPrices(model, explicit["input"], explicit["input"], explicit["output"], "")
    prices = ModelPrices(
        model,
        explicit.get("input", found.input),
        explicit.get("cached_input", found.cached_input),
        explicit.get("output", found.output),
        "price settings" if explicit else found.source,
        explicit.get("cache_write", found.cache_write),
    )
    if prices.cached_input > prices.input:
        # The reservation prices every input token at the full rate: an upper bound only
        # while a cache read costs no more than that.
        raise PriceProblem(
            CACHED_INPUT_PRICE,
            f"{CACHED_INPUT_PRICE}: the cached input price of {_shown(model)} "
            f"({_usd(prices.cached_input)}) must not exceed its input price "
            f"({_usd(prices.input)})",
        )
    if prices.cache_write_or_input < prices.input:
        # Every provider bills a cache write above the input price: a lower figure is a
        # slip (the cache-read price, say) that would undercharge every write.
        raise PriceProblem(
            CACHE_WRITE_PRICE,
            f"{CACHE_WRITE_PRICE}: the cache write price of {_shown(model)} "
            f"({_usd(prices.cache_write_or_input)}) must not be below its input price "
            f"({_usd(prices.input)})",
        )
    return prices


def _usd(microcents_per_million: int) -> str:
    return f"${Decimal(microcents_per_million) / MICROCENTS_PER_USD:f}"


def _shown(model: str) -> str:
    """A model name as it appears in a message: quoted, on one line, not too long."""
    text = repr(model)
    return text if len(text) <= 60 else text[:56] + "...'"
