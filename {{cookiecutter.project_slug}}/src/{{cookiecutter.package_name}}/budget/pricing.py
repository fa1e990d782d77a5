"""What a model call costs, in integer USD microcents (money.py: the unit and dollars).

Prices are given in US dollars per million tokens (how providers publish them) and are
stored as integer USD microcents per million tokens: $1 = 100,000,000 microcents, so
$2.50/M is 250 microcents per token. All arithmetic is on integers and rounds up, so a
price such as $0.075/M bills exactly and the ledger never drifts through floating point.

Which prices apply is the running model's business (``llm/prices.py``): the app passes
its ``Settings.llm_prices``; without ``prices`` the model chosen at generation is priced.
"""

from __future__ import annotations

from ..llm.base import MESSAGE_OVERHEAD_TOKENS
from ..llm.prices import (
    CACHE_WRITE_MICROCENTS_PER_MILLION,
    CACHED_INPUT_MICROCENTS_PER_MILLION,
    GENERATED,
    INPUT_MICROCENTS_PER_MILLION,
    MODEL,
    OUTPUT_MICROCENTS_PER_MILLION,
    ModelPrices,
)

__all__ = [
    "CACHED_INPUT_MICROCENTS_PER_MILLION",
    "CACHE_WRITE_MICROCENTS_PER_MILLION",
    "GENERATED",
    "INPUT_MICROCENTS_PER_MILLION",
    "MESSAGE_OVERHEAD_TOKENS",
    "MODEL",
    "OUTPUT_MICROCENTS_PER_MILLION",
    "ModelPrices",
    "cost",
    "estimate",
    "max_input_tokens",
]

TOKENS_PER_PRICE_UNIT = 1_000_000


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def cost(
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    prices: ModelPrices = GENERATED,
) -> int:
    """The exact charge for a call at ``prices``, in USD microcents, rounded up.

    ``cached_input_tokens`` is the part of ``input_tokens`` the provider served from its
    prompt cache (OpenAI's ``cached_tokens``, Anthropic's ``cache_read_input_tokens``),
    billed at the cached-input price; ``cache_write_tokens`` the part it wrote to the
    cache (Anthropic's ``cache_creation_input_tokens``), billed at the cache-write price;
    the rest of the input is billed at the full input price.
    """
    if min(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens) < 0:
        raise ValueError("token counts must not be negative")
    if cached_input_tokens + cache_write_tokens > input_tokens:
        raise ValueError("cache reads and writes are part of the input tokens: at most as many")
    plain_input = input_tokens - cached_input_tokens - cache_write_tokens
    input_cost = plain_input * prices.input
    cached_cost = cached_input_tokens * prices.cached_input
    write_cost = cache_write_tokens * prices.cache_write_or_input
    output_cost = output_tokens * prices.output
    return _ceil_div(input_cost + cached_cost + write_cost + output_cost, TOKENS_PER_PRICE_UNIT)


def max_input_tokens(*texts: str) -> int:
    """An upper bound on the input tokens the given message texts can take.

    Byte-level BPE tokenizers (OpenAI's, Anthropic's) never produce more tokens than the
    text has UTF-8 bytes, so bytes plus per-message overhead is a safe ceiling; it is
    generous, and the commit later charges only what the provider reports.
    """
    return sum(len(text.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for text in texts)


def estimate(*texts: str, max_tokens: int, prices: ModelPrices = GENERATED) -> int:
    """The most a call with these input texts and output limit can cost, in microcents.

    This is what gets reserved: it is never below :func:`cost` of the real usage, as long
    as the provider honours ``max_tokens`` (every input token is priced at the full input
    price, which is never below the cached one). Cache writes cost more than that, but
    the app asks for none (it sends no ``cache_control``); a route that does must reserve
    its prompt at the cache-write price (``prices.cache_write_or_input``).
    """
    return cost(max_input_tokens(*texts), max_tokens, prices=prices)
