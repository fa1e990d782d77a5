"""The running model is the priced model: LLM_MODEL brings its own prices, or is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import pytest
from flask import Flask

from conftest import Provisioner, assert_error, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings
from {{ cookiecutter.package_name }}.llm import prices
from localcycles import LocalCyclesServer

# The shipped table, read here without the code under test.
TABLE = json.loads((Path(prices.__file__).parent / "prices.json").read_text(encoding="utf-8"))
PROMPTED = {
    "input": Decimal("{{ cookiecutter.input_price_per_million_usd }}"),
    "output": Decimal("{{ cookiecutter.output_price_per_million_usd }}"),
    "cached_input": Decimal("{{ cookiecutter.cached_input_price_per_million_usd }}"),
    "cache_write": Decimal("{{ cookiecutter.cache_write_price_per_million_usd }}"),
}
GENERATED_ENTRY = TABLE["aliases"].get(prices.MODEL, prices.MODEL)
PROMPT = "Price me at the model that answers."
MAX_TOKENS = 32
INPUT, OUTPUT, CACHED = prices.INPUT_PRICE, prices.OUTPUT_PRICE, prices.CACHED_INPUT_PRICE
WRITE = prices.CACHE_WRITE_PRICE
UNLISTED = "claude-opus-9"


def usd(model: str) -> dict[str, Decimal]:
    """``model``'s table prices in USD per million tokens (cache prices default to input)."""
    row = TABLE["models"][TABLE["aliases"].get(model, model)]
    found = {kind: Decimal(row[kind]) for kind in ("input", "output")}
    cache = {kind: Decimal(row.get(kind, row["input"])) for kind in ("cached_input", "cache_write")}
    return {**found, **cache}


def microcents(usd_per_million: Decimal) -> int:
    return int(usd_per_million * 100_000_000)


def exact_charge(usd_per_million: dict[str, Decimal], input_tokens: int, output_tokens: int) -> int:
    """A call's cost computed independently: exact decimals, rounded up to a microcent."""
    dollars = (
        input_tokens * usd_per_million["input"] + output_tokens * usd_per_million["output"]
    ) / 1_000_000
    return int((dollars * 100_000_000).to_integral_value(rounding=ROUND_CEILING))


# Table models dearer than the generated one on both counts: a charge at the generated
# model's rates would be visibly short.
DEARER = sorted(
    name
    for name, row in TABLE["models"].items()
    if name != GENERATED_ENTRY
    and Decimal(row["input"]) > PROMPTED["input"]
    and Decimal(row["output"]) > PROMPTED["output"]
)
needs_another_model = pytest.mark.skipif(
    not DEARER, reason="this project's price table lists no dearer model than its own"
)


def load(**env: str) -> Settings:
    return read_settings(env, Path("/tmp/instance"))


def problems(**env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load(**env)
    return caught.value.problems


def test_the_table_is_the_chosen_providers_part() -> None:
    assert TABLE["provider"] == "{{ cookiecutter.llm_provider }}"
    assert {row["provider"] for row in TABLE["models"].values()} == {TABLE["provider"]}
    assert "MIT" in TABLE["licence"] and "Pydantic Services Inc." in TABLE["source"]


def test_the_generated_model_keeps_the_prompted_prices() -> None:
    found = load().llm_prices
    assert found.model == prices.MODEL == "{{ cookiecutter.model }}"
    assert (found.input, found.output, found.cached_input, found.cache_write) == (
        microcents(PROMPTED["input"]),
        microcents(PROMPTED["output"]),
        microcents(PROMPTED["cached_input"]),
        microcents(PROMPTED["cache_write"]),
    )


def test_every_listed_model_and_alias_is_priced_as_the_table_says() -> None:
    for name in [*TABLE["models"], *TABLE["aliases"]]:
        if TABLE["aliases"].get(name, name) == GENERATED_ENTRY:
            continue  # the generated model's prices are the prompted ones
        found = load(LLM_MODEL=name).llm_prices
        expected = usd(name)
        assert found.model == name
        assert found.input == microcents(expected["input"]), name
        assert found.output == microcents(expected["output"]), name
        assert found.cached_input == microcents(expected["cached_input"]), name
        assert found.cache_write == microcents(expected["cache_write"]), name


@needs_another_model
def test_a_table_model_is_reserved_and_charged_at_its_own_prices(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
) -> None:
    model = DEARER[0]
    app = make_app(cycles_server.base_url, LLM_MODEL=model, CYCLES_DENY_CACHE_MS="0")
    client = app.test_client()
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
    worst_case = exact_charge(usd(model), pricing.max_input_tokens(PROMPT), MAX_TOKENS)
    # Enough for the generated model's reservation, one microcent short of this model's.
    assert worst_case - 1 >= pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    provisioner.set_budget("acme", allocated=worst_case - 1)
    refused = client.post("/chat", json=body, headers=auth_headers("acme"))
    assert_error(refused, 402, "budget_exceeded")

    provisioner.set_budget("acme", allocated=worst_case)
    response = client.post("/chat", json=body, headers=auth_headers("acme"))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    tokens = answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]
    charged = provisioner.balance("acme")["spent"]
    assert charged == answer["cost_usd_microcents"] == exact_charge(usd(model), *tokens)
    assert charged > pricing.cost(*tokens)  # what the generated model's rates would charge


def test_a_model_priced_by_settings_is_charged_at_those_prices(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
) -> None:
    given = {"input": Decimal("3.125"), "output": Decimal("17.00000001")}
    app = make_app(
        cycles_server.base_url,
        LLM_MODEL="acme-llm-1",
        **{INPUT: str(given["input"]), OUTPUT: str(given["output"])},
    )
    body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
    response = app.test_client().post("/chat", json=body, headers=auth_headers("acme"))
    assert response.status_code == 200, response.get_json()
    usage = response.get_json()["usage"]
    expected = exact_charge(given, usage["input_tokens"], usage["output_tokens"])
    assert provisioner.balance("acme")["spent"] == expected


def test_a_model_without_a_price_is_refused_at_start_up(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    assert UNLISTED not in TABLE["models"] and UNLISTED not in TABLE["aliases"]
    with pytest.raises(ConfigError) as caught:
        make_app(cycles_server.base_url, LLM_MODEL=UNLISTED)
    (problem,) = caught.value.problems
    assert problem.startswith(f"LLM_MODEL='{UNLISTED}' has no price"), problem
    assert INPUT in problem and OUTPUT in problem and "\n" not in problem
    # Half a price is no price.
    (problem,) = problems(LLM_MODEL=UNLISTED, **{INPUT: "1.00"})
    assert problem.startswith("LLM_MODEL=") and OUTPUT in problem


def test_price_settings_price_an_unlisted_model_and_replace_listed_figures() -> None:
    found = load(LLM_MODEL=UNLISTED, **{INPUT: " 2.5 ", OUTPUT: "10"}).llm_prices
    assert (found.input, found.output) == (250_000_000, 1_000_000_000)
    assert found.cached_input == found.input  # no cached price given: billed as input
    assert found.cache_write_or_input == found.input  # nor a cache-write price
    assert found.source == "price settings"
    found = load(**{OUTPUT: "99.00", CACHED: "0.00000001"}).llm_prices
    assert found.model == prices.MODEL
    assert found.input == microcents(PROMPTED["input"])  # not given: kept
    assert (found.output, found.cached_input) == (9_900_000_000, 1)


@pytest.mark.parametrize("name", [INPUT, OUTPUT, CACHED, WRITE])
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cheap", "like 2.50"),
        ("-1", "like 2.50"),
        ("1e2", "like 2.50"),
        ("NaN", "like 2.50"),
        ("0.000000001", "at most 8 decimal places"),
        ("1.000000000", "at most 8 decimal places"),
        ("10000.01", "at most 10000"),
    ],
)
def test_price_settings_are_checked_as_the_prompts_check_prices(
    name: str, text: str, reason: str
) -> None:
    (problem,) = problems(**{name: text})
    assert problem.startswith(f"{name}='{text}' is invalid: expected"), problem
    assert reason in problem and "\n" not in problem


def test_a_cache_read_may_not_cost_more_than_the_input() -> None:
    (problem,) = problems(LLM_MODEL=UNLISTED, **{INPUT: "1.00", OUTPUT: "2.00", CACHED: "1.01"})
    assert problem.startswith(f"{CACHED}: the cached input price"), problem
    assert "($1.01)" in problem and "($1)" in problem
    assert load(LLM_MODEL=UNLISTED, **{INPUT: "1.00", OUTPUT: "2.00", CACHED: "1.00"})


def test_a_cache_write_may_not_cost_less_than_the_input() -> None:
    prices_given = {INPUT: "1.00", OUTPUT: "2.00"}
    (problem,) = problems(LLM_MODEL=UNLISTED, **prices_given, **{WRITE: "0.99"})
    assert problem.startswith(f"{WRITE}: the cache write price"), problem
    assert "($0.99)" in problem and "($1)" in problem
    found = load(LLM_MODEL=UNLISTED, **prices_given, **{WRITE: "1.25"}).llm_prices
    assert (found.input, found.cache_write) == (100_000_000, 125_000_000)
    # A listed model's own cache-write price is replaced by the setting.
    assert load(**{WRITE: "9999.00"}).llm_prices.cache_write == 999_900_000_000
