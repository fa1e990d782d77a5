"""The typed bodies: strict requests checked against this app's limits, and the same limits
written into their JSON schemas, so the API document and the checks agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import MAX_PROMPT_CHARS, MAX_TOKENS_LIMIT, app_env
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings
from {{ cookiecutter.package_name }}.web.schemas import (
    CONTEXT_SETTINGS,
    NOT_BLANK_PATTERN,
    TEXT_TOO_LONG,
    ChatRequest,
    SummarizeRequest,
    apply_limits,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return read_settings(app_env("http://127.0.0.1:9", tmp_path), tmp_path)


def test_requests_are_strict_and_within_the_limits(settings: Settings) -> None:
    context = {CONTEXT_SETTINGS: settings}
    chat = ChatRequest.model_validate({"prompt": "hi", "max_tokens": 5.0}, context=context)
    assert (chat.max_tokens, chat.output_limit(settings)) == (5, 5)
    default = ChatRequest.model_validate({"prompt": "hi"}, context=context)
    assert default.output_limit(settings) == settings.default_max_tokens
    for bad in ({"prompt": "hi", "max_tokens": "5"}, {"prompt": "hi", "max_tokens": None},
                {"prompt": " \t"}, {"prompt": "hi", "extra": 1},
                {"prompt": "hi", "max_tokens": MAX_TOKENS_LIMIT + 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            ChatRequest.model_validate(bad, context=context)
    with pytest.raises(ValidationError) as caught:
        SummarizeRequest.model_validate({"text": "x" * (MAX_PROMPT_CHARS + 1)}, context=context)
    assert caught.value.errors()[0]["type"] == TEXT_TOO_LONG


def test_the_schemas_carry_the_same_limits(settings: Settings) -> None:
    chat = apply_limits(ChatRequest.model_json_schema(), settings)["properties"]
    assert chat["prompt"]["maxLength"] == MAX_PROMPT_CHARS
    assert chat["prompt"]["pattern"] == NOT_BLANK_PATTERN
    assert (chat["max_tokens"]["minimum"], chat["max_tokens"]["maximum"]) == (1, MAX_TOKENS_LIMIT)
    assert chat["max_tokens"]["default"] == settings.default_max_tokens
    text = apply_limits(SummarizeRequest.model_json_schema(), settings)["properties"]["text"]
    assert text["maxLength"] == MAX_PROMPT_CHARS
