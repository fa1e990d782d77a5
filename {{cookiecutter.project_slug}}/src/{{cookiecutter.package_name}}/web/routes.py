"""The HTTP API: health, budget-guarded LLM routes, the caller's budget, the API document.

Three blueprints, nested so that each hook runs exactly where it belongs:

- ``api``: ``GET /healthz``, ``GET /readyz`` and ``GET /openapi.json``, open to anyone;
- ``api.tenant``: every route that acts for a tenant; resolves the caller first (401);
- ``api.tenant.llm``: the LLM routes; each is ``@guarded``: its body is validated and its
  worst-case cost reserved with Cycles before the view runs.

Bodies in and out are the typed models of ``schemas.py``. Each view declares its entry in
the API document (``@documented``, or ``@guarded`` for an LLM route); ``openapi.py`` builds
the document from them. (``GET /metrics`` lives in ``observability/metrics.py``.)
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel

from .. import callers
from ..budget.end_users import checked_user, end_user_balances
from ..config import Settings, app_settings
from ..config_end_users import END_USER_RE
from ..cycles import key_expiry
from ..cycles.clients import cycles_clients
from ..cycles.errors import may_fail_open
from ..errors import ApiError, error_response
from ..observability.metrics import metrics_view
from . import budget_headers, openapi
from .budget_view import budget_response
from .guard import GuardedCall, GuardedCompletion, LlmCall, guarded
from .operations import CALLER_ERRORS, Operation, documented
from .schemas import (
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
# Every answer of a guarded route carries the caller's budget (web/budget_headers.py).
llm_bp.after_request(budget_headers.add_headers)


def model_response(model: BaseModel, status: int = 200) -> Response:
    response = jsonify(model.model_dump(mode="json", exclude_none=True))
    response.status_code = status
    return response


@bp.get("/healthz")
@documented(
    Operation("Liveness: the process serves requests", "Alive.", HealthResponse, auth="open")
)
def healthz() -> Response:
    """Liveness: the process serves requests (it does not call Cycles or the LLM)."""
    return model_response(HealthResponse())


@bp.get("/readyz")
@documented(
    Operation(
        "Readiness: the budget service (Cycles) answers",
        "Ready (or degraded: serving without Cycles).",
        ReadyResponse,
        auth="open",
        notes={
            503: "`not_ready`: Cycles does not answer (or not properly) or refuses the app's "
            "key, or a key's recorded expiry has passed."
        },
    )
)
def readyz() -> Response:
    """Readiness: Cycles answers a cheap call (one tenant's balances) within its timeouts,
    and no runtime key has ended.

    503 when Cycles does not answer, unless ``CYCLES_FAIL_OPEN`` serves without it
    ("degraded"); 503 when Cycles refuses the app's key or a key's recorded expiry has
    passed (fail-open never serves past a refused key). A key that ends within
    ``CYCLES_KEY_WARN_DAYS`` adds a ``warning``: still ready. The expiry comes from the
    settings (key_expiry.py): a probe makes one runtime call and no admin call.
    """
    settings = app_settings()
    keys = key_expiry.check(settings, key_expiry.now())
    if keys.expired:
        return error_response(503, "not_ready", " ".join(keys.expired))
    try:
        cycles_clients().balances(settings.tenants[0])
    except ApiError as error:
        if error.error == "rate_limited":
            # It answered: it is up, just busy.
            return model_response(ReadyResponse(warning=keys.warning))
        if settings.cycles_fail_open and may_fail_open(error):
            return model_response(ReadyResponse(status="degraded", warning=keys.warning))
        # Not answering covers a 200 that is not a balance list too (cycles/clients.py).
        what = "is not answering properly" if may_fail_open(error) else "refuses the app's calls"
        return error_response(503, "not_ready", f"Cycles {what} ({error.error}).")
    return model_response(ReadyResponse(warning=keys.warning))


@bp.get("/openapi.json")
@documented(
    Operation(
        "This document",
        "OpenAPI 3.1.",
        auth="open",
        content={"application/json": {"schema": {"type": "object"}}},
    )
)
def openapi_document() -> Response:
    """The API document (OpenAPI 3.1) of this app, with its limits and its auth scheme."""
    return jsonify(openapi.document(current_app))


# --- guarded LLM routes ------------------------------------------------------------------
# Each names its body's model and turns a valid body into a provider call; @guarded reserves
# that call's estimate before the view runs, and documents the route.


def chat_call(chat: ChatRequest, settings: Settings) -> LlmCall:
    return LlmCall(
        prompt=chat.prompt,
        max_tokens=chat.output_limit(settings),
        stream=chat.stream,
        model=chat.chosen_model(settings),
        user=chat.user,
    )


@llm_bp.post("/chat")
@guarded(
    ChatRequest,
    chat_call,
    response=ChatResponse,
    summary="Answer a prompt, within the caller's budget",
    answer="The answer, whole (JSON) or streamed (server-sent events).",
    description="Reserves the most the call can cost before calling the model, then "
    "charges what it used.",
    streams=True,
)
def chat(call: GuardedCall) -> Response:
    if call.call.stream:
        return call.stream()
    result = call.complete()
    return model_response(ChatResponse(text=result.completion.text, **_completion(result)))


def summarize_call(summarize: SummarizeRequest, settings: Settings) -> LlmCall:
    return LlmCall(
        prompt=summarize.text,
        max_tokens=settings.default_max_tokens,
        system=SUMMARY_SYSTEM_PROMPT,
        model=summarize.chosen_model(settings),
        user=summarize.user,
    )


@llm_bp.post("/summarize")
@guarded(
    SummarizeRequest,
    summarize_call,
    response=SummaryResponse,
    summary="Summarize a text, within the caller's budget",
    answer="The summary.",
)
def summarize(call: GuardedCall) -> Response:
    result = call.complete()
    return model_response(SummaryResponse(summary=result.completion.text, **_completion(result)))


def _completion(result: GuardedCompletion) -> dict[str, Any]:
    completion = result.completion
    # Fit-to-budget lowered max_tokens (budget/fit.py): the body says what was asked for.
    requested = result.requested_max_tokens
    return {
        "model": completion.model,
        "max_tokens": result.max_tokens,
        "usage": Usage(
            input_tokens=completion.input_tokens, output_tokens=completion.output_tokens
        ),
        "cost_usd_microcents": result.cost,
        **({"requested_max_tokens": requested} if requested is not None else {}),
    }


# --- the caller's budget -----------------------------------------------------------------


@tenant_bp.get("/budget")
@documented(
    Operation(
        "The caller's own balances, per Cycles scope, and the budget's period",
        "Balances in USD microcents, with each amount in US dollars beside it (exact "
        "decimal strings), and the period: its start, its end and the next reset.",
        BudgetResponse,
        errors=(*CALLER_ERRORS, 400, 404),
        notes={
            400: "`invalid_request`: `user` is not an end-user id.",
            404: "`not_found`: the end user `user` has no budget (it has made no call).",
        },
        parameters=(
            {
                "name": "tenant",
                "in": "query",
                "required": False,
                "description": "Must be the caller's own tenant (else 403).",
                "schema": {"type": "string"},
            },
            {
                "name": "user",
                "in": "query",
                "required": False,
                "description": "Only this end user's budgets (404: it has none).",
                "schema": {"type": "string", "pattern": f"^{END_USER_RE.pattern}$"},
            },
        ),
    )
)
def budget() -> Response:
    """The caller's own balances per scope, in USD microcents and dollars, and its period."""
    tenant = callers.current_tenant()
    asked = request.args.get("tenant")
    if asked is not None and asked != tenant:
        raise ApiError(403, "forbidden", "You can only see your own budget.")
    user = request.args.get("user")
    if user is None:
        balances = cycles_clients().balances(tenant)
    else:
        # Only the caller's own scopes are read: another tenant's end users are not there.
        found = cycles_clients().balances(tenant, agent=checked_user(user))
        balances = end_user_balances(found, user)
    return budget_response(app_settings(), tenant, balances, key_expiry.now())


# /metrics is served by observability/metrics.py; its entry in the document is here, with
# the other routes' (observability does not depend on the web layer).
documented(
    Operation(
        "Prometheus metrics (every tenant's spend: not for callers)",
        "Prometheus text format.",
        auth="metrics_token",
        content={"text/plain": {"schema": {"type": "string"}}},
        notes={
            401: "`unauthorized`: METRICS_TOKEN missing or wrong.",
            404: "`not_found`: no METRICS_TOKEN in production.",
        },
    )
)(metrics_view)

tenant_bp.register_blueprint(llm_bp)
bp.register_blueprint(tenant_bp)
