"""LLM_MODELS: every served model priced at start-up, every bad entry one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.config_models import model_key
from {{ cookiecutter.package_name }}.config_reader import read_settings
from {{ cookiecutter.package_name }}.llm import prices

BASE = {"APP_ENV": "testing"}


def settings(tmp_path: Path, **env: str) -> Settings:
    return read_settings({**BASE, **env}, tmp_path)


def problems(tmp_path: Path, **env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **env)
    return caught.value.problems


def other_listed_models() -> list[str]:
    """Models of the shipped price table other than the generated one (none in a fake-only
    project: its table lists the fake model alone)."""
    own = prices.canonical(prices.MODEL)
    return [name for name in sorted(prices.table()["models"]) if name != own][:1]


def test_only_the_configured_model_by_default(tmp_path: Path) -> None:
    found = settings(tmp_path)
    assert found.llm_models == {found.llm_model: found.llm_prices}
    assert found.prices_of(None) == found.llm_prices


def test_explicit_prices_and_table_prices(tmp_path: Path) -> None:
    listed = other_listed_models()
    found = settings(tmp_path, LLM_MODELS=" , ".join([*listed, "my-ft=0.30/1.2"]))
    assert list(found.llm_models) == [found.llm_model, *listed, "my-ft"]
    for name in listed:
        assert found.prices_of(name) == prices.listed(name)
    mine = found.prices_of("my-ft")
    # $0.30 and $1.20 per million tokens, in microcents; cache reads and writes at input.
    assert (mine.input, mine.output, mine.cached_input, mine.cache_write_or_input) == (
        30_000_000,
        120_000_000,
        30_000_000,
        30_000_000,
    )


def test_the_configured_model_may_be_listed_without_prices(tmp_path: Path) -> None:
    model = settings(tmp_path).llm_model
    assert list(settings(tmp_path, LLM_MODELS=model).llm_models) == [model]
    (problem,) = problems(tmp_path, LLM_MODELS=f"{model}=1/2")
    assert problem.startswith("LLM_MODELS:") and "list it without prices" in problem


def test_an_unpriced_model_is_a_start_up_error(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, LLM_MODELS="no-such-model-anywhere")
    assert problem.startswith("LLM_MODELS: no-such-model-anywhere has no price")
    assert "no-such-model-anywhere=INPUT/OUTPUT" in problem


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("bad model", "is not a model name"),
        ("x=1.00", "the prices of x ('1.00')"),
        ("x=abc/1", "the prices of x ('abc/1')"),
        ("x=1/2,x=3/4", "x is listed twice"),
        ("Model-A=1/2,model-a=1/2", "Model-A and model-a would share the Cycles scope"),
    ],
)
def test_bad_entries_name_the_setting(tmp_path: Path, entry: str, says: str) -> None:
    found = problems(tmp_path, LLM_MODELS=entry)
    assert len(found) == 1 and found[0].startswith("LLM_MODELS: ") and says in found[0], found


def test_model_key_is_a_cycles_scope_value() -> None:
    assert model_key("gpt-4o-mini") == "gpt-4o-mini"
    assert model_key("ft:GPT-4o:acme@v1+x/y") == "ft-gpt-4o-acme-v1-x-y"
    assert len(model_key("m" * 300)) == 128
