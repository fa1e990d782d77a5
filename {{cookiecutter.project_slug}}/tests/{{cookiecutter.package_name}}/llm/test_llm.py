"""build_provider: the fake always, the real provider the bake has, a clear error otherwise."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }} import config
from {{ cookiecutter.package_name }}.llm import (
    AVAILABLE_PROVIDERS,
    FakeProvider,
    LLMProvider,
    build_provider,
)
from {{ cookiecutter.package_name }}.llm.vendors import VENDORS


def test_build_provider_builds_the_fake() -> None:
    provider: LLMProvider = build_provider("fake", model="gpt-test", api_key="ignored")
    assert isinstance(provider, FakeProvider)
    assert (provider.name, provider.model) == ("fake", "gpt-test")


def test_the_generated_default_provider_is_available() -> None:
    assert AVAILABLE_PROVIDERS[0] == "fake"
    assert config.DEFAULT_LLM_PROVIDER in AVAILABLE_PROVIDERS


@pytest.mark.parametrize("name", ["", "Fake", "gpt-4o", "cohere"])
def test_build_provider_names_the_allowed_values_for_an_unknown_name(name: str) -> None:
    with pytest.raises(ValueError, match="unknown LLM provider") as info:
        build_provider(name, model="gpt-test")
    for allowed in AVAILABLE_PROVIDERS:
        assert allowed in str(info.value)


def test_the_available_providers_are_the_fake_and_the_bakes_vendors() -> None:
    expected = ("fake", *VENDORS)
    assert expected == AVAILABLE_PROVIDERS
