"""Request bodies: the JSON object a route receives, checked before any budget is touched.

The rules are the typed models of ``models.py``; this module reads the body and turns a
failure into the API's stable errors: 415 ``unsupported_media_type``, 413
``body_too_large`` / ``prompt_too_large``, 400 ``invalid_json`` / ``invalid_request``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from werkzeug.exceptions import RequestEntityTooLarge

from ..config import Settings
from ..errors import ApiError
from .schemas import CONTEXT_SETTINGS, TEXT_TOO_LONG

# Room for the JSON around the prompt: field names, max_tokens, whitespace.
BODY_OVERHEAD_BYTES = 4096

RequestModel = TypeVar("RequestModel", bound=BaseModel)

# Pydantic error types -> what the caller reads after the field name.
_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "string_too_short": "must be a non-empty string",
    "string_unicode": "must be valid Unicode text",  # e.g. a lone surrogate escape
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
}


def max_body_bytes(settings: Settings) -> int:
    """The largest body a valid request can have; larger ones get 413 before parsing.

    A character of the prompt takes at most 12 bytes in JSON (an escaped surrogate pair).
    """
    return settings.max_prompt_chars * 12 + BODY_OVERHEAD_BYTES


def json_body() -> dict[str, Any]:
    """The request's JSON object, or ApiError 400/413/415."""
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send a JSON body (application/json).")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, "body_too_large", "The request body is too large.") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the stack
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    return body


def validate(
    model: type[RequestModel], body: Mapping[str, Any], settings: Settings
) -> RequestModel:
    """``body`` (from :func:`json_body`) as ``model``, or the ApiError that answers it."""
    try:
        return model.model_validate(body, context={CONTEXT_SETTINGS: settings})
    except ValidationError as exc:
        raise _api_error(exc.errors(include_input=False, include_url=False)) from None


def _problem(error: ErrorDetails) -> str:
    """What is wrong with the field, worded to follow its name."""
    if error["type"] in _MESSAGES:
        return _MESSAGES[error["type"]]
    if error["type"] == "greater_than_equal":
        return f"must be at least {error.get('ctx', {}).get('ge')}"
    message = error["msg"].rstrip(".")
    # The models' own messages already follow a field name ("must be ..."); pydantic's
    # ("Input should be ...") get a lead-in.
    return message if message[:1].islower() else f"is invalid: {message[:1].lower()}{message[1:]}"


def _api_error(errors: list[ErrorDetails]) -> ApiError:
    # Every unknown field in one message; otherwise the first problem, which is enough
    # to fix the request (an oversized text is reported as such, with its own status).
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if unknown:
        # Quote a few names, shortened: they come from the caller and end up in logs.
        shown = ", ".join(repr(name[:40]) for name in sorted(unknown)[:3])
        return ApiError(400, "invalid_request", f"Unknown field(s): {shown}.")
    too_long = [e for e in errors if e["type"] == TEXT_TOO_LONG]
    first = too_long[0] if too_long else errors[0]
    # The field named by the caller (pydantic appends union members, e.g. "max_tokens.int").
    field = str(first["loc"][0]) if first["loc"] else "body"
    message = f"'{field}' {_problem(first)}."
    if too_long:
        return ApiError(413, "prompt_too_large", message)
    return ApiError(400, "invalid_request", message)
