"""The API document: OpenAPI 3.1, built from the app's own routes.

Served at ``GET /openapi.json``. Each route of the app's URL map contributes the
:class:`~.operations.Operation` its view carries (operations.py): its models, every status it
can answer with the error body, and who may call it; the schemas are the models those
operations name, with the limits of this deployment (prompt length, max_tokens) written in.
Built once per app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from ..config import Settings, app_settings
from . import budget_headers, caller_scheme
from .operations import Operation, Route, routes
from .schemas import DeltaEvent, DoneEvent, ErrorEvent, ErrorResponse, apply_limits

DOCUMENT_EXTENSION = "openapi_document"  # the app's document, built on first use

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
STREAM_EVENTS: tuple[type[BaseModel], ...] = (DeltaEvent, DoneEvent, ErrorEvent)

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
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "caller": [{caller_scheme.SCHEME_NAME: []}],
    "open": [],
    "metrics_token": [{}, {"metricsToken": []}],
}
STREAM_DESCRIPTION = (
    'With `"stream": true`: server-sent events. One `delta` event (`DeltaEvent`) per '
    "piece of text, then `done` (`DoneEvent`: usage, model, cost) or, if the call fails "
    "after it started, `error` (`ErrorEvent`). Each event's `data` is one JSON object "
    "whose `type` names the event."
)


def document(app: Flask) -> dict[str, Any]:
    """``app``'s API document (built on first use, then kept on the app)."""
    built: dict[str, Any] | None = app.extensions.get(DOCUMENT_EXTENSION)
    if built is None:
        built = app.extensions[DOCUMENT_EXTENSION] = build(app)
    return built


def build(app: Flask) -> dict[str, Any]:
    found = list(routes(app))
    paths: dict[str, Any] = {}
    for route in found:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "{{ cookiecutter.project_slug }} API",
            "version": "0.1.0",
            "description": "LLM calls guarded by a Cycles budget. Amounts are USD microcents "
            "($1 = 100,000,000). Every response carries `X-Request-ID`.",
        },
        "paths": paths,
        "components": _components(found, app_settings(app)),
    }


def _components(found: list[Route], settings: Settings) -> dict[str, Any]:
    return {
        "schemas": _schemas([route.operation for route in found], settings),
        "securitySchemes": {
            caller_scheme.SCHEME_NAME: caller_scheme.SCHEME,
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
            **budget_headers.DOCUMENTED,
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
    }


def _schemas(operations: list[Operation], settings: Settings) -> dict[str, Any]:
    """The models the operations name (requests with this app's limits), and the error
    body and stream events every document has."""
    requests = {op.request: None for op in operations if op.request is not None}
    responses = {op.response: None for op in operations if op.response is not None}
    always: tuple[type[BaseModel], ...] = (ErrorResponse, *STREAM_EVENTS)
    for model in always:
        responses[model] = None
    models = [(m, "validation") for m in requests] + [(m, "serialization") for m in responses]
    _, found = models_json_schema(
        models,  # type: ignore[arg-type]
        ref_template=REF,
        schema_generator=_Schemas,
    )
    schemas: dict[str, Any] = found["$defs"]
    for model in requests:
        apply_limits(schemas[model.__name__], settings)
    return schemas


class _Schemas(GenerateJsonSchema):
    """Pydantic's JSON schemas, without ``"default": null``.

    A field that defaults to None is left out of the app's JSON (never sent as null), and
    its schema does not allow null: writing that default would make the document invalid
    (openapi-spec-validator checks defaults against their schema).
    """

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


def _operation(route: Route) -> dict[str, Any]:
    op = route.operation
    # The path's variables, unless the operation declares them itself.
    declared = {p["name"] for p in op.parameters if p.get("in") == "path"}
    path = [p for p in route.path_parameters if p["name"] not in declared]
    entry: dict[str, Any] = {
        "summary": op.summary,
        "parameters": [{"$ref": "#/components/parameters/RequestId"}, *path, *op.parameters],
        "responses": {"200": _ok(op)} | _errors(op),
        "security": _SECURITY[op.auth],
    }
    description = op.description
    if op.streams:
        description = f"{description} {STREAM_DESCRIPTION}" if description else STREAM_DESCRIPTION
    if description:
        entry["description"] = description
    if op.request is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    return entry


def _ok(op: Operation) -> dict[str, Any]:
    content: dict[str, Any] = dict(op.content or {})
    if op.response is not None:
        content["application/json"] = {"schema": _ref(op.response)}
    if op.streams:
        content["text/event-stream"] = {"schema": _EVENT_SCHEMA}
    return {"description": op.answer, "headers": _headers(200, op), "content": content}


def _errors(op: Operation) -> dict[str, Any]:
    statuses = sorted({*op.errors, *op.notes})
    return {
        str(status): {
            "description": op.notes.get(status) or ERRORS[status],
            "headers": _headers(status, op),
            "content": {"application/json": {"schema": _ref(ErrorResponse)}},
        }
        for status in statuses
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _headers(status: int, op: Operation) -> dict[str, Any]:
    headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if status in _RETRY_AFTER_STATUSES:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    if op.guarded:  # the caller's budget (web/budget_headers.py)
        for name in budget_headers.DOCUMENTED:
            headers[name] = {"$ref": f"#/components/headers/{name}"}
    return headers


# One event of a stream (as OpenAPI 3.2's itemSchema would say it): its name, and its data
# line, a JSON object of the event's model.
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": STREAM_DESCRIPTION,
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["delta", "done", "error"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"oneOf": [_ref(e) for e in STREAM_EVENTS]},
        },
    },
}
