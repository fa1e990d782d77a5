"""for_model: the app's provider answering as another served model."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.llm import FakeProvider
from {{ cookiecutter.package_name }}.llm.models import for_model


def test_the_default_model_is_the_provider_itself() -> None:
    provider = FakeProvider("base-model")
    assert for_model(provider, None) is provider
    assert for_model(provider, "base-model") is provider


def test_another_model_is_a_copy_that_calls_it() -> None:
    provider = FakeProvider("base-model")
    other = for_model(provider, "other-model")
    assert other.model == "other-model" and provider.model == "base-model"
    assert other.complete(prompt="hi", max_tokens=20).model == "other-model"
    assert provider.complete(prompt="hi", max_tokens=20).model == "base-model"
