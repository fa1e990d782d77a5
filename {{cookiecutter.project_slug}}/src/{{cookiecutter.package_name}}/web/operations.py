"""What each route says about itself in the API document, declared where the route is.

A view carries its :class:`Operation`: ``@documented(...)`` under the route decorator sets
it, and ``@guarded`` sets it for every LLM route (its request and response models, the
errors a guarded call can answer with). ``openapi.py`` walks the app's URL map and builds
the document from these, so adding a route is one edit in one place; a route without one
stops the document from being built, naming the route.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Flask
from pydantic import BaseModel

# Who may call: the caller's credentials (this project's tenant auth), anyone, or the
# operator with METRICS_TOKEN.
Auth = Literal["caller", "open", "metrics_token"]

# Every status a guarded LLM call can answer with, besides its 200.
LLM_ERRORS = (400, 401, 402, 403, 413, 415, 429, 500, 502, 503, 504)
# What any other route acting for a caller can answer with.
CALLER_ERRORS = (401, 403, 429, 500, 503)
# Answered by Flask itself for every route; not documented per route.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """One route's entry in the API document."""

    summary: str
    answer: str  # what the 200 carries, in words
    response: type[BaseModel] | None = None  # the 200's JSON body (None: see ``content``)
    request: type[BaseModel] | None = None  # the JSON body it takes, if any
    auth: Auth = "caller"
    errors: tuple[int, ...] = ()  # statuses answered with the error body
    notes: Mapping[int, str] = field(default_factory=dict)  # wording of a status for this route
    description: str | None = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    content: Mapping[str, Any] | None = None  # a 200 that is not a JSON model: media type -> schema
    streams: bool = False  # with "stream": true the 200 is server-sent events
    guarded: bool = False  # reserves its worst-case cost before the view runs (@guarded)


# Keyed by the function Flask calls (the one in app.view_functions). Static facts about
# code, the same for every app, so a module-level table is right here.
_OPERATIONS: dict[Callable[..., Any], Operation] = {}


def documented(operation: Operation) -> Callable[[View], View]:
    """View decorator (under the route decorator): document the route as ``operation``."""

    def record(view: View) -> View:
        _OPERATIONS[view] = operation
        return view

    return record


def operation_of(view: Callable[..., Any]) -> Operation | None:
    return _OPERATIONS.get(view)


# Views kept out of the document on purpose: pages for people, not API calls (the docs
# page and its assets, web/docs.py), as FastAPI keeps its own docs out of its schema.
_UNDOCUMENTED: set[Callable[..., Any]] = set()


def undocumented(view: View) -> View:
    """View decorator (under the route decorator): keep the route out of the API document."""
    _UNDOCUMENTED.add(view)
    return view


def is_undocumented(view: Callable[..., Any]) -> bool:
    return view in _UNDOCUMENTED


@dataclass(frozen=True)
class Route:
    """A route of an app as the document lists it."""

    path: str  # OpenAPI spelling: ``/items/{id}``
    method: str  # lower case
    endpoint: str
    operation: Operation
    # The path's variables as OpenAPI parameters (``<int:id>``: a whole number), which a
    # valid document must declare.
    path_parameters: tuple[Mapping[str, Any], ...] = ()


def routes(app: Flask) -> Iterator[Route]:
    """Every route of ``app`` with its operation; a route without one is an error."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint == "static" or is_undocumented(view):
            continue
        operation = operation_of(view)
        if operation is None:
            raise LookupError(
                f"route {rule.rule} ({rule.endpoint}) is not documented: put @documented(...) "
                "or @guarded(...) under its route decorator, or @undocumented for a page that "
                "is not part of the API (web/operations.py)"
            )
        path = openapi_path(rule.rule)
        parameters = tuple(_path_parameter(c, name) for c, name in _VARIABLE.findall(rule.rule))
        for method in sorted((rule.methods or set()) - AUTOMATIC_METHODS):
            yield Route(path, method.lower(), rule.endpoint, operation, parameters)


# A variable of a Flask rule: ``<name>``, ``<int:name>``, ``<string(length=2):name>``.
_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_CONVERTER_SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    "int": {"type": "integer", "minimum": 0},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}


def openapi_path(rule: str) -> str:
    """Flask's ``/items/<int:id>`` is OpenAPI's ``/items/{id}``."""
    return _VARIABLE.sub(lambda found: "{" + found.group(2) + "}", rule)


def _path_parameter(converter: str, name: str) -> Mapping[str, Any]:
    schema = _CONVERTER_SCHEMAS.get(converter, {"type": "string"})
    return {"name": name, "in": "path", "required": True, "schema": dict(schema)}


def guarded_routes(app: Flask) -> dict[str, Operation]:
    """``app``'s guarded LLM routes, by path (what the fuzz and property tests drive)."""
    return {route.path: route.operation for route in routes(app) if route.operation.guarded}
