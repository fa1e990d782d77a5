"""The HTTP API: health, budget-guarded LLM routes and the caller's budget.

Three blueprints, nested so that each hook runs exactly where it belongs:

- ``api``: ``GET /healthz``, open to anyone;
- ``api.tenant``: every route that acts for a tenant; resolves the caller first (401);
- ``api.tenant.llm``: the guarded routes; validates the body and asks Cycles before any work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from . import guard, tenancy
from .budget import get_budgets
from .config import Settings
from .errors import ApiError
from .guard import LlmCall

bp = Blueprint("api", __name__)
tenant_bp = Blueprint("tenant", __name__)
llm_bp = Blueprint("llm", __name__)

# Room for the JSON around the prompt: field names, max_tokens, whitespace.
BODY_OVERHEAD_BYTES = 4096
SUMMARY_SYSTEM_PROMPT = (
    "Summarize the user's text in a few sentences. Keep facts, names and numbers exact."
)

tenant_bp.before_request(tenancy.authenticate)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests (it does not call Cycles or the LLM)."""
    return jsonify(status="ok")


# --- guarded LLM routes ------------------------------------------------------------------

# How each guarded route turns its JSON body into a call; the preflight hook needs it
# before the view runs.
CallParser = Callable[[Mapping[str, Any], Settings], LlmCall]
_parsers: dict[str, CallParser] = {}


def guarded_route(rule: str, parse: CallParser) -> Callable[[Callable[[], Response]], Any]:
    """Register a POST route whose body ``parse`` validates before the Cycles preflight."""

    def register(view: Callable[[], Response]) -> Any:
        _parsers[view.__name__] = parse
        return llm_bp.post(rule)(view)

    return register


@llm_bp.before_request
def preflight() -> None:
    """Validate the body, then ask Cycles whether the caller can afford it (402 if not)."""
    settings: Settings = current_app.extensions["settings"]
    view_name = (request.endpoint or "").rsplit(".", 1)[-1]
    parse = _parsers.get(view_name)
    if parse is None:  # an unknown method or URL: let Flask answer 404/405
        return
    call = parse(json_body(), settings)
    g.llm_call = call
    get_budgets(current_app).preflight(tenancy.current_tenant(), call.estimate())


def parse_chat(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    allow_fields(body, "prompt", "max_tokens")
    prompt = text_field(body, "prompt", settings.max_prompt_chars)
    max_tokens = body.get("max_tokens", settings.default_max_tokens)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise ApiError(400, "invalid_request", "'max_tokens' must be a whole number.")
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise ApiError(
            400,
            "invalid_request",
            f"'max_tokens' must be between 1 and {settings.max_tokens_limit}.",
        )
    return LlmCall(route="chat", prompt=prompt, max_tokens=max_tokens)


def parse_summarize(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    allow_fields(body, "text")
    text = text_field(body, "text", settings.max_prompt_chars)
    return LlmCall(
        route="summarize",
        prompt=text,
        max_tokens=settings.default_max_tokens,
        system=SUMMARY_SYSTEM_PROMPT,
    )


@guarded_route("/chat", parse_chat)
def chat() -> Response:
    result = guard.complete(g.llm_call, tenancy.current_tenant())
    return completion_response("text", result)


@guarded_route("/summarize", parse_summarize)
def summarize() -> Response:
    result = guard.complete(g.llm_call, tenancy.current_tenant())
    return completion_response("summary", result)


def completion_response(field: str, result: guard.GuardedCompletion) -> Response:
    completion = result.completion
    return jsonify(
        {
            field: completion.text,
            "model": completion.model,
            "max_tokens": result.max_tokens,
            "usage": {
                "input_tokens": completion.input_tokens,
                "output_tokens": completion.output_tokens,
            },
            "cost_usd_microcents": result.cost,
        }
    )


# --- the caller's budget -----------------------------------------------------------------


@tenant_bp.get("/budget")
def budget() -> Response:
    """The caller's own balances per scope, in USD microcents."""
    tenant = tenancy.current_tenant()
    asked = request.args.get("tenant")
    if asked is not None and asked != tenant:
        raise ApiError(403, "forbidden", "You can only see your own budget.")
    balances = get_budgets(current_app).balances(tenant)
    return jsonify(
        {
            "tenant": tenant,
            "unit": "USD_MICROCENTS",
            "balances": [vars(balance) for balance in balances],
        }
    )


# --- request bodies ----------------------------------------------------------------------


def max_body_bytes(settings: Settings) -> int:
    """The largest body a valid request can have; larger ones get 413 before parsing.

    A character of the prompt takes at most 12 bytes in JSON (an escaped surrogate pair).
    """
    return settings.max_prompt_chars * 12 + BODY_OVERHEAD_BYTES


def json_body() -> Mapping[str, Any]:
    """The request's JSON object, or ApiError 400/413/415."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send a JSON body (application/json).")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "body_too_large", "The request body is too large.") from None
    try:
        body = json.loads(raw)
    except ValueError:  # includes bodies that are not UTF-8
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return body


def allow_fields(body: Mapping[str, Any], *names: str) -> None:
    unknown = sorted(set(body) - set(names))
    if unknown:
        # Quote a few names, shortened: they come from the caller and end up in logs.
        shown = ", ".join(repr(name[:40]) for name in unknown[:3])
        raise ApiError(400, "invalid_request", f"Unknown field(s): {shown}.")


def text_field(body: Mapping[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_request", f"'{name}' must be a non-empty string.")
    try:
        value.encode("utf-8")  # a JSON escape can carry a lone surrogate, e.g. \ud800
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_request", f"'{name}' must be valid Unicode text.") from None
    if len(value) > max_chars:
        raise ApiError(413, "prompt_too_large", f"'{name}' is longer than {max_chars} characters.")
    return value


tenant_bp.register_blueprint(llm_bp)
bp.register_blueprint(tenant_bp)
