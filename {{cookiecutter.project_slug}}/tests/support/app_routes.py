"""The API of an app with the test settings, read once at collection time.

Tests that make one test (or one strategy) per route (the fuzz run, the property tests)
need the routes before any fixture exists: this builds a throwaway app, takes its API
document and its guarded routes, and closes it. A route added to the app is picked up here
with nothing else to edit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from conftest import app_env
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close
from {{ cookiecutter.package_name }}.web import openapi
from {{ cookiecutter.package_name }}.web.operations import Operation, guarded_routes


@dataclass(frozen=True)
class AppApi:
    document: dict[str, Any]  # what GET /openapi.json serves
    guarded: dict[str, Operation]  # the guarded LLM routes, by path


@cache
def api_of_a_test_app() -> AppApi:
    with tempfile.TemporaryDirectory() as tmp:
        # Never called: building the document needs no Cycles server.
        app = create_app(app_env("http://127.0.0.1:9", Path(tmp)))
        try:
            return AppApi(openapi.document(app), guarded_routes(app))
        finally:
            close(app)
