"""Regenerate data/llm-prices.json, the price table that fills the template's price prompts.

Run by a maintainer, never at bake time (bakes stay offline and need nothing but this JSON):

    python -m pip install genai-prices==<version>   # pinned in requirements-dev.txt
    python scripts/update_prices.py                 # then review `git diff data/`

The figures come from the `genai-prices` package (MIT, Pydantic Services Inc.; its licence
is kept beside the table as data/LICENSE-genai-prices), read from the price snapshot that
the installed version ships, never fetched at run time. For every OpenAI and Anthropic
model with both an input and an output price per token, the table keeps the standard
prices in force today (USD per million tokens, as decimal strings): input, output and,
where the provider publishes them, cached input (a prompt-cache read) and cache write (a
prompt-cache write with the default lifetime: Anthropic's 5-minute write; the 1-hour
write, priced higher, is left out: the app sends no ``ttl``). Batch, flex and
priority variants are left out. A model whose price rises for long prompts keeps its base
price and says from how many input tokens the higher rate applies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

from genai_prices import data
from genai_prices.types import ClauseEquals, ClauseOr, ModelInfo, TieredPrices

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
TABLE = TEMPLATE_DIR / "data" / "llm-prices.json"
PROVIDERS = ("openai", "anthropic")
# What each provider's prompt offers first. Chosen by hand (the price data has no release
# dates to pick "the newest" from): a current general-purpose model of each provider with
# one flat price, so the default bake bills every call exactly whatever the prompt length.
DEFAULT_MODELS = {"openai": "gpt-5.4-mini", "anthropic": "claude-sonnet-5-5"}
# The offline fake is no vendor's model; its made-up prices keep development budgets
# moving at the pace of a mid-range model.
FAKE_MODEL = {"fake-model": {"input": "2.50", "output": "10.00", "cached_input": "1.25"}}
# Names a person can type as the `model` answer (genai-prices also keeps match patterns
# such as "ft:gpt-4o" prefixes, which are not model names).
# The template stores prices as integer USD microcents per million tokens ($1 = 10^8).
PRICE_DECIMAL_PLACES = 8
MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")


def usd(value: Decimal) -> str:
    """A price as the providers print it: at least two decimals, no float noise."""
    if value < 0 or value.as_tuple().exponent < -PRICE_DECIMAL_PLACES:  # type: ignore[operator]
        raise SystemExit(f"price {value} is not a whole number of USD microcents per token")
    text = format(value.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def base_and_tier(price: Decimal | TieredPrices | None) -> tuple[Decimal | None, int | None]:
    if isinstance(price, TieredPrices):
        return price.base, min(tier.start for tier in price.tiers)
    return price, None


def exact_names(model: ModelInfo) -> list[str]:
    """The model's id and the other exact names genai-prices matches it by."""
    clauses = model.match.or_ if isinstance(model.match, ClauseOr) else [model.match]
    names = [model.id] + [c.equals for c in clauses if isinstance(c, ClauseEquals)]
    return sorted({name for name in names if MODEL_NAME_RE.fullmatch(name)}, key=names.index)


def entry(provider: str, model: ModelInfo, now: datetime.datetime) -> dict[str, Any] | None:
    prices = model.get_prices(now)
    input_price, input_tier = base_and_tier(prices.input_mtok)
    output_price, output_tier = base_and_tier(prices.output_mtok)
    cached_price, cached_tier = base_and_tier(prices.cache_read_mtok)
    write_price, write_tier = base_and_tier(prices.cache_write_mtok)
    if input_price is None or output_price is None:
        return None  # not billed per token (audio, embeddings, moderation, ...)
    row: dict[str, Any] = {
        "provider": provider,
        "input": usd(input_price),
        "output": usd(output_price),
    }
    if cached_price is not None:
        row["cached_input"] = usd(cached_price)
    if write_price is not None:
        row["cache_write"] = usd(write_price)
    tiers = [t for t in (input_tier, output_tier, cached_tier, write_tier) if t is not None]
    if tiers:
        row["higher_rate_above_input_tokens"] = min(tiers)
    return row


def build_table(today: datetime.date) -> dict[str, Any]:
    now = datetime.datetime.combine(today, datetime.time(12), tzinfo=datetime.UTC)
    models: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    for provider in data.providers:
        if provider.id not in PROVIDERS:
            continue
        for model in provider.models:
            names = exact_names(model)
            row = entry(provider.id, model, now) if names and names[0] == model.id else None
            if row is None:
                continue
            models[model.id] = row
            for alias in names[1:]:
                aliases.setdefault(alias, model.id)
    models.update({name: {"provider": "fake", **row} for name, row in FAKE_MODEL.items()})
    aliases = {alias: target for alias, target in aliases.items() if alias not in models}
    for provider, name in DEFAULT_MODELS.items():
        row = models.get(name)
        if row is None or row["provider"] != provider or "higher_rate_above_input_tokens" in row:
            raise SystemExit(f"default model {name!r} of {provider} is not a flat-priced entry")
    package_version = version("genai-prices")
    return {
        "source": (
            f"genai-prices {package_version} (MIT licence, Copyright (c) Pydantic Services "
            "Inc.; see LICENSE-genai-prices beside this file), standard prices in force on "
            f"{today.isoformat()}"
        ),
        "generated_by": "scripts/update_prices.py",
        "generated_on": today.isoformat(),
        "genai_prices_version": package_version,
        "unit": "USD per million tokens",
        "defaults": {**DEFAULT_MODELS, "fake": next(iter(FAKE_MODEL))},
        "models": dict(sorted(models.items())),
        "aliases": dict(sorted(aliases.items())),
    }


def render(table: dict[str, Any]) -> str:
    """JSON with one model or alias per line, so a price change is a one-line diff."""
    lines = []
    for key, value in table.items():
        if isinstance(value, dict) and key in ("models", "aliases"):
            rows = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
            lines.append(f"  {json.dumps(key)}: {{\n" + ",\n".join(rows) + "\n  }")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=datetime.date.fromisoformat, help="price date (today)")
    parser.add_argument("--output", type=Path, default=TABLE)
    args = parser.parse_args(argv)
    table = build_table(args.date or datetime.date.today())
    args.output.write_text(render(table), encoding="utf-8")
    print(f"{args.output}: {len(table['models'])} models, {len(table['aliases'])} aliases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
