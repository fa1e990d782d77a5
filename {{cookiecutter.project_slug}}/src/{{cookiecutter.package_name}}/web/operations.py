"""What each route says about itself in the API document, declared where the route is.

A view carries its :class:`Operation`: ``@documented(...)`` under the route decorator sets
it, and ``@guarded`` sets it for every LLM route (its request and response models, the
errors a guarded call can answer with). ``openapi.py`` walks the app's URL map and builds
the document from these, so adding a route is one edit in one place; a route without one
stops the document from being built, naming the route.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Route:
    """A route of an app as the document lists it."""

    path: str  # OpenAPI spelling: ``/items/{id}``
    method: str  # lower case
    endpoint: str
    operation: Operation


def routes(app: Flask) -> Iterator[Route]:
    """Every route of ``app`` with its operation; a route without one is an error."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        operation = operation_of(app.view_functions[rule.endpoint])
        if operation is None:
            raise LookupError(
                f"route {rule.rule} ({rule.endpoint}) is not documented: put @documented(...) "
                "or @guarded(...) under its route decorator (web/operations.py)"
            )
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in sorted((rule.methods or set()) - AUTOMATIC_METHODS):
            yield Route(_openapi_path(path), method.lower(), rule.endpoint, operation)


def _openapi_path(path: str) -> str:
    # Flask's "<int:id>" is OpenAPI's "{id}".
    parts = path.split("{")
    return parts[0] + "".join("{" + part.split(":")[-1] for part in parts[1:])


def guarded_routes(app: Flask) -> dict[str, Operation]:
    """``app``'s guarded LLM routes, by path (what the fuzz and property tests drive)."""
    return {route.path: route.operation for route in routes(app) if route.operation.guarded}
