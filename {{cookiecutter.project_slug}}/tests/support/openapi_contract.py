"""Every response the suite sees must match the API document (``GET /openapi.json``).

``responses_match_the_document`` (autouse, imported by conftest.py) listens to Flask's
``request_finished`` signal of every app a test creates, in test clients and in servers
on real sockets alike, and checks each response of an API app (``create_app``'s) against
the app's own document: its status is documented for the route, its content type too, a
JSON body validates against the schema, and ``X-Request-ID`` is there. Mismatches fail the
test that caused them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask, Response, request, request_finished

from {{ cookiecutter.package_name }}.web import openapi
from {{ cookiecutter.package_name }}.web.operations import is_undocumented, openapi_path

ERROR_SCHEMA = "#/components/schemas/ErrorResponse"
# Answered by Flask itself for every route (Allow header; GET without its body).
AUTOMATIC_METHODS = ("OPTIONS", "HEAD")


class DocumentCheck:
    """Checks responses against one app's document (validators built once per schema)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._validators: dict[str, Any] = {}
        self._request_id = re.compile(
            document["components"]["headers"]["X-Request-ID"]["schema"]["pattern"]
        )

    def problems(self, rule: str | None, method: str, response: Response) -> list[str]:
        where = f"{method} {rule or request.path} -> {response.status_code}"
        found = []
        request_id = response.headers.get("X-Request-ID", "")
        if not self._request_id.fullmatch(request_id):
            found.append(f"{where}: X-Request-ID {request_id!r} is missing or unsafe")
        documented = self._documented(rule, method, response.status_code)
        if documented is None:
            return [*found, f"{where}: status not in the document"]
        # The caller's budget headers (web/budget_headers.py) only where the document says.
        sent = {name for name, _ in response.headers if name.startswith("X-Budget-")}
        if undocumented := sent - set(documented.get("headers", {})):
            found.append(f"{where}: headers {sorted(undocumented)} not documented")
        content = documented.get("content", {})
        if response.mimetype not in content:
            return [*found, f"{where}: content type {response.mimetype} not documented"]
        schema = content[response.mimetype]["schema"]
        if response.mimetype == "application/json":
            found += self._check_json(where, schema, response)
        return found

    def _documented(self, rule: str | None, method: str, status: int) -> dict[str, Any] | None:
        if rule is None:
            # No route matched (404, 405): the app's JSON error, whatever the path.
            error = {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}}
            return {"content": error} if status in (404, 405) else None
        operation = self.document["paths"].get(openapi_path(rule), {}).get(method.lower())
        if operation is None:
            return None
        found: dict[str, Any] | None = operation["responses"].get(str(status))
        return found

    def _check_json(self, where: str, schema: dict[str, Any], response: Response) -> list[str]:
        try:
            body = json.loads(response.get_data())
        except ValueError:
            return [f"{where}: body is not JSON"]
        errors = [
            f"{where}: {error.message} at {list(error.instance_path)}"
            for error in self._validator(schema).iter_errors(body)
        ]
        return errors[:3]

    def _validator(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            # The schema refers into the document's components: validate with them at hand.
            root = {**schema, "components": self.document["components"]}
            self._validators[key] = jsonschema_rs.Draft202012Validator(root)
        return self._validators[key]


@pytest.fixture(autouse=True)
def responses_match_the_document() -> Iterator[list[str]]:
    """Collect every mismatch seen during the test; the test fails if there is one."""
    problems: list[str] = []
    checks: dict[int, DocumentCheck] = {}
    lock = threading.Lock()

    def check(sender: Flask, response: Response, **_: Any) -> None:
        if request.method in AUTOMATIC_METHODS:
            return
        if "api" not in sender.blueprints:
            return  # a bare Flask app of a unit test (errors.py's handlers), not the API
        if response.is_streamed and response.mimetype == "application/json":
            return  # cannot be read without consuming it (the app never does this)
        with lock:
            if id(sender) not in checks:
                checks[id(sender)] = DocumentCheck(openapi.document(sender))
            document_check = checks[id(sender)]
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule is not None and is_undocumented(sender.view_functions[request.endpoint or ""]):
            return  # a page kept out of the document on purpose (the docs page)
        found = document_check.problems(rule, request.method, response)
        with lock:
            problems.extend(found)

    request_finished.connect(check)
    try:
        yield problems
    finally:
        request_finished.disconnect(check)
    assert not problems, "responses that do not match the API document:\n" + "\n".join(problems)
