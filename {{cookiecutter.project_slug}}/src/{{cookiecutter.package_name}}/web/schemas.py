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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ..budget.periods import PERIODS
from ..config import Settings
from ..config_end_users import END_USER_RE, END_USER_RULE

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


class _ModelChoice(_Request):
    # Absent: LLM_MODEL. A model not served is a 400 before any budget is held.
    model: str | SkipJsonSchema[None] = Field(
        default=None, description="The model to answer with (default: LLM_MODEL)."
    )
    # OpenAI's field for the end user; here the call must also fit that end user's budget.
    user: str | SkipJsonSchema[None] = Field(
        default=None,
        description="Your end user's id: the call must fit that end user's budget as well "
        "as yours (END_USER_BUDGET_USD; created on first use).",
    )

    @field_validator("model", "user", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # null is not "the default": leave the field out for that
            raise PydanticCustomError("string_type", "must be a string")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None, info: ValidationInfo) -> str | None:
        served = _settings(info).llm_models
        if value is not None and value not in served:
            raise PydanticCustomError(
                "unknown_model", "must be one of: {models}", {"models": ", ".join(served)}
            )
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if _settings(info).end_user_allocation is None:
            raise PydanticCustomError(
                "end_users_off", "end-user budgets are off here (END_USER_BUDGET_USD)"
            )
        if not END_USER_RE.fullmatch(value):
            raise PydanticCustomError("invalid_user", "must be " + END_USER_RULE)
        return value

    def chosen_model(self, settings: Settings) -> str | None:
        """The model asked for; None for the default (LLM_MODEL), asked for or not."""
        return None if self.model in (None, settings.llm_model) else self.model


class ChatRequest(_ModelChoice):
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


class SummarizeRequest(_ModelChoice):
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
    requested_max_tokens: int | SkipJsonSchema[None] = Field(
        default=None,
        ge=1,
        description="Present when the call was fitted to the budget (FIT_TO_BUDGET_MIN_TOKENS): "
        "the max_tokens asked for; max_tokens is the lower limit the budget paid for.",
    )


class ChatResponse(_Completion):
    text: str


class SummaryResponse(_Completion):
    summary: str


# US dollars as an exact decimal string (money.usd_text): never rounded, never a float;
# two decimals at least, up to eight (one microcent), "-" for debt beyond the allocation.
USD_PATTERN = r"^-?[0-9]+\.[0-9]{2,8}$"
Usd = Annotated[str, Field(pattern=USD_PATTERN, examples=["4.99873"])]
Instant = Annotated[
    str, Field(json_schema_extra={"format": "date-time"}, examples=["2027-03-01T00:00:00Z"])
]


class Balance(BaseModel):
    """One budget scope, in USD microcents and, beside each amount, in US dollars."""

    scope: str
    allocated: int
    spent: int
    reserved: int
    remaining: int
    debt: int
    allocated_usd: Usd
    spent_usd: Usd
    reserved_usd: Usd
    remaining_usd: Usd
    debt_usd: Usd


class BudgetResponse(BaseModel):
    tenant: str
    unit: Literal["USD_MICROCENTS"] = "USD_MICROCENTS"
    balances: list[Balance]
    period: str = Field(
        default="none",
        json_schema_extra={"enum": list(PERIODS)},
        description="The budget's period (its plan's); none: it never resets.",
    )
    period_start: Instant | None = Field(
        default=None, description="When the period began (UTC); null without a period."
    )
    period_end: Instant | None = Field(
        default=None, description="When the period ends (UTC); null without a period."
    )
    next_reset: Instant | None = Field(
        default=None,
        description="When spending starts again from zero (UTC): the period's end; null "
        "when the budget never resets.",
    )


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
    # The bound on the int itself: on the union, pydantic would write an unknown "ge"
    # keyword into the document instead of "minimum".
    retry_after_ms: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None, description="When to retry (also in the Retry-After header)."
    )
    # A budget denial (402) says why and what to do (budget/denials.py).
    estimate_microcents: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None,
        description="402: the most the refused request could cost (what it "
        "tried to reserve), in USD microcents.",
    )
    estimate_usd: Usd | SkipJsonSchema[None] = Field(
        default=None, description="402: the same estimate in US dollars."
    )
    remaining_microcents: int | SkipJsonSchema[None] = Field(
        default=None,
        description="402: what remains of the caller's budget, in USD "
        "microcents (left out if Cycles could not say).",
    )
    remaining_usd: Usd | SkipJsonSchema[None] = Field(
        default=None, description="402: the same in US dollars."
    )
    limit_microcents: int | SkipJsonSchema[None] = Field(
        default=None, description="402: the caller's budget allocation, in USD microcents."
    )
    limit_usd: Usd | SkipJsonSchema[None] = Field(
        default=None, description="402: the same in US dollars."
    )
    how_to_get_more: str | SkipJsonSchema[None] = Field(
        default=None, description="402: how to get more budget (BUDGET_TOPUP_MESSAGE)."
    )


# Server-sent events of a streamed /chat (documented in the OpenAPI text/event-stream body).


class DeltaEvent(BaseModel):
    type: Literal["delta"]
    text: str


class DoneEvent(_Completion):
    type: Literal["done"]
    remaining_microcents: int | SkipJsonSchema[None] = Field(
        default=None,
        description="What remains of the caller's budget after this stream's charge, in "
        "USD microcents (as the X-Budget-Remaining-Microcents header, which a stream sends "
        "before its charge).",
    )
    remaining_usd: Usd | SkipJsonSchema[None] = Field(
        default=None, description="The same in US dollars."
    )


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
    if "user" in properties and settings.end_user_allocation is None:
        del properties["user"]  # end-user budgets are off: naming a user is a 400
    elif "user" in properties:
        properties["user"]["pattern"] = f"^{END_USER_RE.pattern}$"
    if "model" in properties:
        properties["model"] = {
            "type": "string",
            "enum": list(settings.llm_models),
            "default": settings.llm_model,
            "description": properties["model"].get("description", ""),
        }
    return schema
