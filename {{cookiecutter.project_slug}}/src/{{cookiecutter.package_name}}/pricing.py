"""What a model call costs, in integer USD microcents.

Prices were given in US dollars per million tokens (how providers publish them) and are
stored as integer USD microcents per million tokens: $1 = 100,000,000 microcents, so
$2.50/M is 250 microcents per token. All arithmetic is on integers and rounds up, so a
price such as $0.075/M bills exactly and the ledger never drifts through floating point.
"""

from __future__ import annotations

from .llm.base import MESSAGE_OVERHEAD_TOKENS

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "cost", "estimate", "max_input_tokens"]

MODEL = "{{ cookiecutter.model }}"
MICROCENTS_PER_USD = 100_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000

# Input: ${{ cookiecutter.input_price_per_million_usd }} per million tokens.
INPUT_MICROCENTS_PER_MILLION = {{ cookiecutter.input_price_per_million_usd | usd_to_microcents | py_int }}
# Output: ${{ cookiecutter.output_price_per_million_usd }} per million tokens.
OUTPUT_MICROCENTS_PER_MILLION = {{ cookiecutter.output_price_per_million_usd | usd_to_microcents | py_int }}


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def cost(input_tokens: int, output_tokens: int) -> int:
    """The exact charge for a call, in USD microcents, rounded up to a whole microcent."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must not be negative")
    input_cost = input_tokens * INPUT_MICROCENTS_PER_MILLION
    output_cost = output_tokens * OUTPUT_MICROCENTS_PER_MILLION
    return _ceil_div(input_cost + output_cost, TOKENS_PER_PRICE_UNIT)


def max_input_tokens(*texts: str) -> int:
    """An upper bound on the input tokens the given message texts can take.

    Byte-level BPE tokenizers (OpenAI's, Anthropic's) never produce more tokens than the
    text has UTF-8 bytes, so bytes plus per-message overhead is a safe ceiling; it is
    generous, and the commit later charges only what the provider reports.
    """
    return sum(len(text.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for text in texts)


def estimate(*texts: str, max_tokens: int) -> int:
    """The most a call with these input texts and output limit can cost, in microcents.

    This is what gets reserved: it is never below :func:`cost` of the real usage, as long
    as the provider honours ``max_tokens``.
    """
    return cost(max_input_tokens(*texts), max_tokens)
