"""The API document: OpenAPI 3.1, built from the models in ``models.py``.

Served at ``GET /openapi.json``. Every route, every status it can answer with the error
body, the limits of this deployment (prompt length, max_tokens) and the caller
authentication chosen when the project was generated. Built once per app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import state
from ..config import Settings
from .schemas import (
    BudgetResponse,
    ChatRequest,
    ChatResponse,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    SummarizeRequest,
    SummaryResponse,
    apply_limits,
)

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
{%- if cookiecutter.tenant_auth == "api_key" %}

TENANT_SCHEME = "tenantKey"
TENANT_SECURITY: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "The caller's API key (`Authorization: Bearer <key>`); it names the tenant.",
}
{%- else %}

TENANT_SCHEME = "tenantHeader"
TENANT_SECURITY: dict[str, Any] = {
    "type": "apiKey",
    "in": "header",
    "name": "X-Tenant-ID",
    "description": "The tenant id, set by the gateway in front of the app after it "
    "authenticated the caller.",
}
{%- endif %}

# Response models, and request models with this deployment's limits.
_REQUEST_MODELS: tuple[type[BaseModel], ...] = (ChatRequest, SummarizeRequest)
_RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ChatResponse,
    SummaryResponse,
    BudgetResponse,
    HealthResponse,
    ReadyResponse,
    ErrorResponse,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
)

# Each status the app answers, with the stable error codes it carries.
ERRORS: dict[int, str] = {
    400: "Malformed body: `invalid_json`, `invalid_request`.",
    401: "No known caller: `unauthorized`.",
    402: "The budget cannot cover the request: `budget_exceeded`, `debt_outstanding`, "
    "`overdraft_limit_exceeded`, `budget_denied`, `budget_capped`.",
    403: "`tenant_closed`: the tenant's budget account is closed; `forbidden`: another "
    "tenant's data.",
    413: "Too large: `body_too_large`, `prompt_too_large`.",
    415: "Not JSON: `unsupported_media_type`.",
    429: "`rate_limited`: the budget service asks to slow down.",
    500: "`internal_error`.",
    502: "`provider_error`: the language model provider failed; nothing was charged.",
    503: "The budget service cannot answer: `cycles_unavailable`, `cycles_misconfigured`, "
    "`cycles_error`, `budget_not_configured`, `reservation_expired`, `budget_hold_lapsing`, "
    "`stream_stalled` (a stream's client stopped reading).",
    504: "`provider_timeout`: the model did not answer in time; the call is charged its "
    "estimate, since the provider may still bill it.",
}
_RETRY_AFTER_STATUSES = (402, 429, 503)
LLM_ERRORS = (400, 401, 402, 403, 413, 415, 429, 500, 502, 503, 504)
BUDGET_ERRORS = (401, 403, 429, 500, 503)


def document(app: Flask) -> dict[str, Any]:
    """``app``'s API document (built on first use, then kept on the app)."""
    built: dict[str, Any] | None = app.extensions.get(state.OPENAPI)
    if built is None:
        built = app.extensions[state.OPENAPI] = build(state.settings(app))
    return built


def build(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "{{ cookiecutter.project_slug }} API",
            "version": "0.1.0",
            "description": "LLM calls guarded by a Cycles budget. Amounts are USD microcents "
            "($1 = 100,000,000). Every response carries `X-Request-ID`.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {
                TENANT_SCHEME: TENANT_SECURITY,
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`METRICS_TOKEN`; without one, /metrics is open in "
                    "development and absent (404) in production.",
                },
            },
            "headers": {
                "X-Request-ID": {
                    "description": "The request's id: the caller's if it was safe, else new.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"},
                },
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
            },
            "parameters": {
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Your id for the request (letters, digits, `._:-`, at "
                    "most 64); kept if safe, otherwise replaced. Sent on to Cycles.",
                    "schema": {"type": "string"},
                },
            },
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    models = [(m, "validation") for m in _REQUEST_MODELS]
    models += [(m, "serialization") for m in _RESPONSE_MODELS]
    _, found = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = found["$defs"]
    for model in _REQUEST_MODELS:
        apply_limits(schemas[model.__name__], settings)
    return schemas


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _headers(status: int) -> dict[str, Any]:
    headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if status in _RETRY_AFTER_STATUSES:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return headers


def _json(description: str, model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(status),
        "content": {"application/json": {"schema": _ref(model)}},
    }


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {str(s): _json(ERRORS[s], ErrorResponse, s) for s in statuses}


def _operation(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    parameters = [{"$ref": "#/components/parameters/RequestId"}, *more.pop("parameters", [])]
    return {"summary": summary, "parameters": parameters, "responses": responses, **more}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


_TENANT_SECURITY: list[dict[str, list[str]]] = [{TENANT_SCHEME: []}]
_STREAM_DESCRIPTION = (
    'With `"stream": true`: server-sent events. One `delta` event (`DeltaEvent`) per '
    "piece of text, then `done` (`DoneEvent`: usage, model, cost) or, if the call fails "
    "after it started, `error` (`ErrorEvent`). Each event's `data` is one JSON object "
    "whose `type` names the event."
)

# One event of the stream (as OpenAPI 3.2's itemSchema would say it): its name, and its
# data line, a JSON object of the event's model.
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": _STREAM_DESCRIPTION,
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["delta", "done", "error"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"oneOf": [_ref(e) for e in (DeltaEvent, DoneEvent, ErrorEvent)]},
        },
    },
}


def _paths() -> dict[str, Any]:
    chat_ok = _json("The answer, whole (JSON) or streamed (server-sent events).", ChatResponse)
    chat_ok["content"]["text/event-stream"] = {"schema": _EVENT_SCHEMA}
    return {
        "/chat": {
            "post": _operation(
                "Answer a prompt, within the caller's budget",
                {"200": chat_ok, **_errors(LLM_ERRORS)},
                description="Reserves the most the call can cost before calling the model, "
                "then charges what it used. " + _STREAM_DESCRIPTION,
                requestBody=_body(ChatRequest),
                security=_TENANT_SECURITY,
            )
        },
        "/summarize": {
            "post": _operation(
                "Summarize a text, within the caller's budget",
                {"200": _json("The summary.", SummaryResponse), **_errors(LLM_ERRORS)},
                requestBody=_body(SummarizeRequest),
                security=_TENANT_SECURITY,
            )
        },
        "/budget": {
            "get": _operation(
                "The caller's own balances, per Cycles scope",
                {"200": _json("Balances in USD microcents.", BudgetResponse)}
                | _errors(BUDGET_ERRORS),
                parameters=[
                    {
                        "name": "tenant",
                        "in": "query",
                        "required": False,
                        "description": "Must be the caller's own tenant (else 403).",
                        "schema": {"type": "string"},
                    }
                ],
                security=_TENANT_SECURITY,
            )
        },
        "/healthz": {
            "get": _operation(
                "Liveness: the process serves requests",
                {"200": _json("Alive.", HealthResponse)},
                security=[],
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness: the budget service (Cycles) answers",
                {
                    "200": _json("Ready (or degraded: serving without Cycles).", ReadyResponse),
                    "503": _json(
                        "`not_ready`: Cycles does not answer or refuses the app's key, or "
                        "a key's recorded expiry has passed.",
                        ErrorResponse,
                        503,
                    ),
                },
                security=[],
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "headers": _headers(200),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                security=[],
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (every tenant's spend: not for callers)",
                {
                    "200": {
                        "description": "Prometheus text format.",
                        "headers": _headers(200),
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _json(
                        "`unauthorized`: METRICS_TOKEN missing or wrong.", ErrorResponse, 401
                    ),
                    "404": _json(
                        "`not_found`: no METRICS_TOKEN in production.", ErrorResponse, 404
                    ),
                },
                security=[{}, {"metricsToken": []}],
            )
        },
    }
