"""The API's bodies as typed models: what each route accepts and what it answers.

Request models are strict (no coercion: ``"10"`` is not a number, ``true`` is not 1) and
refuse unknown fields. Limits that come from the settings (``MAX_PROMPT_CHARS``,
``MAX_TOKENS_LIMIT``, ``DEFAULT_MAX_TOKENS``) are passed in the validation context, and
:func:`apply_limits` writes the same limits into the OpenAPI document, so the document
and the checks cannot disagree. ``bodies.py`` turns a validation failure into the API's
stable error codes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ..config import Settings

# What counts as blank: JSON Schema's (ECMAScript's) whitespace, spelled out so that the
# check here and the "pattern" in the API document agree exactly (Python's str.isspace
# differs on a few control characters).
WHITESPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK_PATTERN = f"[^{WHITESPACE}]"
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)

# Error types raised by the validators below; bodies.py maps them to statuses.
TEXT_TOO_LONG = "prompt_too_large"
CONTEXT_SETTINGS = "settings"


def _settings(info: ValidationInfo) -> Settings:
    context = info.context or {}
    settings: Settings = context[CONTEXT_SETTINGS]
    return settings


def _check_text(value: str, info: ValidationInfo) -> str:
    """Non-blank, encodable (a JSON escape can carry a lone surrogate), within the limit."""
    if not _NOT_BLANK.search(value):
        raise PydanticCustomError("blank_text", "must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_text", "must be valid Unicode text") from None
    limit = _settings(info).max_prompt_chars
    if len(value) > limit:
        raise PydanticCustomError(
            TEXT_TOO_LONG, "is longer than {limit} characters", {"limit": limit}
        )
    return value


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ChatRequest(_Request):
    """``POST /chat``: one prompt, answered whole or streamed as server-sent events."""

    prompt: str = Field(description="The user's message.", min_length=1)
    # None only as the default (JSON null is refused below), so the schema omits null.
    max_tokens: int | SkipJsonSchema[None] = Field(
        default=None,
        ge=1,
        description="Most output tokens to generate (default: DEFAULT_MAX_TOKENS).",
    )
    stream: bool = Field(
        default=False, description="true: answer as server-sent events (text/event-stream)."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        return _check_text(value, info)

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        if value is None:  # null is not "use the default": leave the field out for that
            raise PydanticCustomError("int_type", "must be a whole number")
        if isinstance(value, float) and value.is_integer():
            return int(value)  # JSON (and JSON Schema) has one number type: 5.0 is 5
        return value

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _settings(info).max_tokens_limit
        if value is not None and value > limit:
            raise PydanticCustomError(
                "too_many_tokens", "must be between 1 and {limit}", {"limit": limit}
            )
        return value

    def output_limit(self, settings: Settings) -> int:
        return settings.default_max_tokens if self.max_tokens is None else self.max_tokens


class SummarizeRequest(_Request):
    """``POST /summarize``: a text to summarize in a few sentences."""

    text: str = Field(description="The text to summarize.", min_length=1)

    @field_validator("text")
    @classmethod
    def _text(cls, value: str, info: ValidationInfo) -> str:
        return _check_text(value, info)


# --- responses -------------------------------------------------------------------------


class Usage(BaseModel):
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class _Completion(BaseModel):
    model: str = Field(description="The model that answered, as the provider names it.")
    max_tokens: int = Field(ge=0, description="The output limit the provider was given.")
    usage: Usage
    cost_usd_microcents: int = Field(
        ge=0, description="What the call was charged, in USD microcents ($1 = 100,000,000)."
    )


class ChatResponse(_Completion):
    text: str


class SummaryResponse(_Completion):
    summary: str


class Balance(BaseModel):
    """One budget scope, in USD microcents."""

    scope: str
    allocated: int
    spent: int
    reserved: int
    remaining: int
    debt: int


class BudgetResponse(BaseModel):
    tenant: str
    unit: Literal["USD_MICROCENTS"] = "USD_MICROCENTS"
    balances: list[Balance]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    # degraded: Cycles is not answering, and CYCLES_FAIL_OPEN serves without it.
    status: Literal["ready", "degraded"] = "ready"
    warning: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Still ready, but act soon: e.g. a Cycles API key ends within "
        "CYCLES_KEY_WARN_DAYS days.",
    )


class ErrorResponse(BaseModel):
    """Every error: a stable machine-readable ``error`` code and a human ``message``."""

    error: str = Field(description="Stable code, e.g. budget_exceeded, invalid_request.")
    message: str = Field(min_length=1)
    retry_after_ms: int | SkipJsonSchema[None] = Field(
        default=None, ge=0, description="When to retry (also in the Retry-After header)."
    )


# Server-sent events of a streamed /chat (documented in the OpenAPI text/event-stream body).


class DeltaEvent(BaseModel):
    type: Literal["delta"]
    text: str


class DoneEvent(_Completion):
    type: Literal["done"]


class ErrorEvent(BaseModel):
    type: Literal["error"]
    error: str
    message: str


def apply_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write this app's limits, as the validators apply them, into a request's JSON schema."""
    properties: dict[str, Any] = schema["properties"]
    for name in ("prompt", "text"):
        if name in properties:
            properties[name]["maxLength"] = settings.max_prompt_chars
            properties[name]["pattern"] = NOT_BLANK_PATTERN  # blank text is refused
    if "max_tokens" in properties:
        properties["max_tokens"] = {
            "type": "integer",
            "minimum": 1,
            "maximum": settings.max_tokens_limit,
            "default": settings.default_max_tokens,
            "description": properties["max_tokens"].get("description", ""),
        }
    return schema
