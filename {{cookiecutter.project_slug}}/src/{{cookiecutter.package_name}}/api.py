"""The HTTP API: health, budget-guarded LLM routes and the caller's budget.

Three blueprints, nested so that each hook runs exactly where it belongs:

- ``api``: ``GET /healthz``, open to anyone;
- ``api.tenant``: every route that acts for a tenant; resolves the caller first (401);
- ``api.tenant.llm``: the LLM routes; each is ``@guarded``: its body is validated and its
  worst-case cost reserved with Cycles before the view runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import tenancy
from .bodies import allow_fields, bool_field, int_field, text_field
from .budget import get_budgets
from .config import Settings
from .errors import ApiError
from .guard import GuardedCall, GuardedCompletion, LlmCall, guarded

bp = Blueprint("api", __name__)
tenant_bp = Blueprint("tenant", __name__)
llm_bp = Blueprint("llm", __name__)

SUMMARY_SYSTEM_PROMPT = (
    "Summarize the user's text in a few sentences. Keep facts, names and numbers exact."
)

tenant_bp.before_request(tenancy.authenticate)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests (it does not call Cycles or the LLM)."""
    return jsonify(status="ok")


# --- guarded LLM routes ------------------------------------------------------------------
# Each parser turns a JSON body into a call; @guarded reserves its estimate before the view.


def parse_chat(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    allow_fields(body, "prompt", "max_tokens", "stream")
    prompt = text_field(body, "prompt", settings.max_prompt_chars)
    max_tokens = int_field(
        body, "max_tokens", settings.default_max_tokens, 1, settings.max_tokens_limit
    )
    stream = bool_field(body, "stream", False)
    return LlmCall(route="chat", prompt=prompt, max_tokens=max_tokens, stream=stream)


def parse_summarize(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    allow_fields(body, "text")
    text = text_field(body, "text", settings.max_prompt_chars)
    return LlmCall(
        route="summarize",
        prompt=text,
        max_tokens=settings.default_max_tokens,
        system=SUMMARY_SYSTEM_PROMPT,
    )


@llm_bp.post("/chat")
@guarded(parse_chat)
def chat(call: GuardedCall) -> Response:
    if call.call.stream:
        return call.stream()
    return completion_response("text", call.complete())


@llm_bp.post("/summarize")
@guarded(parse_summarize)
def summarize(call: GuardedCall) -> Response:
    return completion_response("summary", call.complete())


def completion_response(field: str, result: GuardedCompletion) -> Response:
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


tenant_bp.register_blueprint(llm_bp)
bp.register_blueprint(tenant_bp)
