"""The HTTP API: health, budget-guarded LLM routes, the caller's budget, the API document.

Three blueprints, nested so that each hook runs exactly where it belongs:

- ``api``: ``GET /healthz``, ``GET /readyz`` and ``GET /openapi.json``, open to anyone;
- ``api.tenant``: every route that acts for a tenant; resolves the caller first (401);
- ``api.tenant.llm``: the LLM routes; each is ``@guarded``: its body is validated and its
  worst-case cost reserved with Cycles before the view runs.

Bodies in and out are the typed models of ``models.py``; ``openapi.py`` documents them.
(``GET /metrics`` lives in ``metrics.py``.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel

from .. import callers, state
from ..config import Settings
from ..cycles import key_expiry
from ..cycles.errors import may_fail_open
from ..errors import ApiError, error_response
from . import openapi
from .bodies import validate
from .guard import GuardedCall, GuardedCompletion, LlmCall, guarded
from .schemas import (
    Balance,
    BudgetResponse,
    ChatRequest,
    ChatResponse,
    HealthResponse,
    ReadyResponse,
    SummarizeRequest,
    SummaryResponse,
    Usage,
)

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__)
tenant_bp = Blueprint("tenant", __name__)
llm_bp = Blueprint("llm", __name__)

SUMMARY_SYSTEM_PROMPT = (
    "Summarize the user's text in a few sentences. Keep facts, names and numbers exact."
)

tenant_bp.before_request(callers.authenticate)


def model_response(model: BaseModel, status: int = 200) -> Response:
    response = jsonify(model.model_dump(mode="json", exclude_none=True))
    response.status_code = status
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests (it does not call Cycles or the LLM)."""
    return model_response(HealthResponse())


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: Cycles answers a cheap call (one tenant's balances) within its timeouts,
    and no runtime key has ended.

    503 when Cycles does not answer, unless ``CYCLES_FAIL_OPEN`` serves without it
    ("degraded"); 503 when Cycles refuses the app's key or a key's recorded expiry has
    passed (fail-open never serves past a refused key). A key that ends within
    ``CYCLES_KEY_WARN_DAYS`` adds a ``warning``: still ready. The expiry comes from the
    settings (key_expiry.py): a probe makes one runtime call and no admin call.
    """
    settings = state.settings()
    keys = key_expiry.check(settings, state.now())
    if keys.expired:
        return error_response(503, "not_ready", " ".join(keys.expired))
    try:
        state.cycles().balances(settings.tenants[0])
    except ApiError as error:
        if error.error == "rate_limited":
            # It answered: it is up, just busy.
            return model_response(ReadyResponse(warning=keys.warning))
        if settings.cycles_fail_open and may_fail_open(error):
            return model_response(ReadyResponse(status="degraded", warning=keys.warning))
        what = "is not answering" if may_fail_open(error) else "refuses the app's calls"
        return error_response(503, "not_ready", f"Cycles {what} ({error.error}).")
    return model_response(ReadyResponse(warning=keys.warning))


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The API document (OpenAPI 3.1) of this app, with its limits and its auth scheme."""
    return jsonify(openapi.document(current_app))


# --- guarded LLM routes ------------------------------------------------------------------
# Each parser turns a JSON body into a call; @guarded reserves its estimate before the view.


def parse_chat(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    chat = validate(ChatRequest, body, settings)
    return LlmCall(
        route="chat",
        prompt=chat.prompt,
        max_tokens=chat.output_limit(settings),
        stream=chat.stream,
    )


def parse_summarize(body: Mapping[str, Any], settings: Settings) -> LlmCall:
    summarize = validate(SummarizeRequest, body, settings)
    return LlmCall(
        route="summarize",
        prompt=summarize.text,
        max_tokens=settings.default_max_tokens,
        system=SUMMARY_SYSTEM_PROMPT,
    )


@llm_bp.post("/chat")
@guarded(parse_chat)
def chat(call: GuardedCall) -> Response:
    if call.call.stream:
        return call.stream()
    result = call.complete()
    return model_response(ChatResponse(text=result.completion.text, **_completion(result)))


@llm_bp.post("/summarize")
@guarded(parse_summarize)
def summarize(call: GuardedCall) -> Response:
    result = call.complete()
    return model_response(SummaryResponse(summary=result.completion.text, **_completion(result)))


def _completion(result: GuardedCompletion) -> dict[str, Any]:
    completion = result.completion
    return {
        "model": completion.model,
        "max_tokens": result.max_tokens,
        "usage": Usage(
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens
        ),
        "cost_usd_microcents": result.cost,
    }


# --- the caller's budget -----------------------------------------------------------------


@tenant_bp.get("/budget")
def budget() -> Response:
    """The caller's own balances per scope, in USD microcents."""
    tenant = callers.current_tenant()
    asked = request.args.get("tenant")
    if asked is not None and asked != tenant:
        raise ApiError(403, "forbidden", "You can only see your own budget.")
    balances = state.cycles().balances(tenant)
    return model_response(
        BudgetResponse(tenant=tenant, balances=[Balance(**vars(b)) for b in balances])
    )


tenant_bp.register_blueprint(llm_bp)
bp.register_blueprint(tenant_bp)
