"""Request bodies: the JSON object a route receives, checked before any budget is touched."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from .config import Settings
from .errors import ApiError

# Room for the JSON around the prompt: field names, max_tokens, whitespace.
BODY_OVERHEAD_BYTES = 4096


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
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the stack
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


def int_field(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"'{name}' must be a whole number.")
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"'{name}' must be between {low} and {high}.")
    return value


def bool_field(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"'{name}' must be true or false.")
    return value
