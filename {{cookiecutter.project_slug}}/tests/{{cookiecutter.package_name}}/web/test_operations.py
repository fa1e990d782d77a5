"""Each route declares its entry in the API document where it is declared; the document
lists exactly the app's routes, and a route that declares nothing is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Blueprint, Flask, Response, jsonify
from openapi_spec_validator import OpenAPIV31SpecValidator

from conftest import app_env
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close
from {{ cookiecutter.package_name }}.web import openapi
from {{ cookiecutter.package_name }}.web.operations import (
    Operation,
    documented,
    guarded_routes,
    routes,
)
from {{ cookiecutter.package_name }}.web.schemas import HealthResponse


def bare_app(tmp_path: Path) -> Flask:
    return create_app(app_env("http://127.0.0.1:9", tmp_path))


def test_the_guarded_routes_are_the_llm_routes(app: Flask) -> None:
    guarded = guarded_routes(app)
    assert sorted(guarded) == ["/chat", "/summarize"]
    assert all(op.request is not None and op.response is not None for op in guarded.values())
    listed = {(route.path, route.method) for route in routes(app)}
    assert ("/budget", "get") in listed and ("/budget", "head") not in listed


def test_a_documented_route_joins_the_document_with_its_model(tmp_path: Path) -> None:
    extra = Blueprint("extra", __name__)

    @extra.get("/items/<int:item_id>")
    @documented(Operation("One item", "The item.", HealthResponse, auth="open"))
    def item(item_id: int) -> Response:
        return jsonify(status="ok")

    @extra.get("/files/<path:name>/<uuid:version>")
    @documented(Operation("One file", "The file.", HealthResponse, auth="open"))
    def file(name: str, version: object) -> Response:
        return jsonify(status="ok")

    app = bare_app(tmp_path)
    try:
        app.register_blueprint(extra)
        document = openapi.document(app)
        assert app.test_client().get("/items/7").status_code == 200  # matches the document
    finally:
        close(app)
    operation = document["paths"]["/items/{item_id}"]["get"]
    assert operation["summary"] == "One item" and operation["security"] == []
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/HealthResponse"}
    # A path's variables are declared, typed by their converter: the document stays valid.
    (item_id,) = [p for p in operation["parameters"] if p.get("in") == "path"]
    assert item_id == {
        "name": "item_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
    file_params = document["paths"]["/files/{name}/{version}"]["get"]["parameters"]
    assert [p["schema"] for p in file_params if p.get("in") == "path"] == [
        {"type": "string"},
        {"type": "string", "format": "uuid"},
    ]
    assert [e.message for e in OpenAPIV31SpecValidator(document).iter_errors()] == []


def test_a_route_without_an_entry_stops_the_document_naming_it(tmp_path: Path) -> None:
    app = bare_app(tmp_path)
    try:

        @app.get("/forgotten")
        def forgotten() -> Response:
            return jsonify(status="ok")

        with pytest.raises(LookupError, match=r"route /forgotten \(forgotten\) is not documented"):
            openapi.document(app)
    finally:
        close(app)
