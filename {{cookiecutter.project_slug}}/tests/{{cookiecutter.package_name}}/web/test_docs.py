"""GET /docs: the API document as a Swagger UI page, served from the app's own files (no
CDN, works offline); on in development and testing, off in production unless API_DOCS."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, app_env, assert_error
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import ConfigError
from {{ cookiecutter.package_name }}.web.docs import ASSETS, assets_folder
from localcycles import LocalCyclesServer


class Links(HTMLParser):
    """Every URL the page loads or links to (src, href, and the document's data-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self.document_url: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))
        if tag == "script":
            self.scripts.append(str(found.get("src")))
        if found.get("data-url"):
            self.document_url = found["data-url"]
            self.urls.append(str(found["data-url"]))


def page_links(client: FlaskClient) -> Links:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    links = Links()
    links.feed(response.get_data(as_text=True))
    return links


def test_the_page_loads_swagger_ui_and_the_document_from_this_app_only(
    client: FlaskClient,
) -> None:
    links = page_links(client)
    assert links.document_url == "/openapi.json"
    assert links.urls, "the page loads nothing"
    for url in links.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not this app's"
    kinds = {}
    for url in links.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kinds[url] = response.mimetype
    assert sorted(kinds.values()) == [
        "application/json",
        "text/css",
        "text/javascript",
        "text/javascript",
    ]
    # Swagger UI itself, as the package ships it (a version that reads OpenAPI 3.1).
    bundle = next(url for url in links.scripts if url.endswith("swagger-ui-bundle.js"))
    shipped = assets_folder().joinpath("swagger-ui-bundle.js").read_bytes()
    assert client.get(bundle).data == shipped
    version = assets_folder().joinpath("VERSION").read_text().strip()
    assert int(version.lstrip("v").split(".")[0]) >= 5, version


def test_the_page_may_reach_nothing_but_this_app(client: FlaskClient) -> None:
    """The browser enforces the policy: no CDN, no online validator, whatever the bundle
    holds; and the start-up script turns Swagger UI's validator badge off."""
    links = page_links(client)
    for url in ["/docs", *links.scripts]:
        policy = client.get(url).headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        for name in ("script-src", "connect-src", "style-src", "img-src", "font-src"):
            sources = directives[name].split()
            assert "'self'" in sources
            assert not [s for s in sources if re.match(r"https?:|\*|//", s)], directives[name]
        assert "unsafe-eval" not in directives["script-src"]
        assert "unsafe-inline" not in directives["script-src"]
    init = next(url for url in links.scripts if not url.endswith("swagger-ui-bundle.js"))
    assert "validatorUrl: null" in client.get(init).get_data(as_text=True)


def test_only_the_pages_own_files_are_served(client: FlaskClient) -> None:
    assert client.get("/docs/swagger-ui.css").status_code == 200
    for name in ("index.html", "VERSION", "LICENSE", "..%2Fflask_swagger_ui.py", "nope.js"):
        assert_error(client.get(f"/docs/{name}"), 404, "not_found")
    assert set(ASSETS) == {"swagger-ui.css", "swagger-ui-bundle.js"}


def test_the_docs_are_not_part_of_the_api_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "/openapi.json" in paths
    assert not [path for path in paths if path.startswith("/docs")]


def test_off_in_production_unless_enabled(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    closed = make_app(cycles_server.base_url, APP_ENV="production").test_client()
    assert_error(closed.get("/docs"), 404, "not_found")
    assert_error(closed.get("/docs/swagger-ui-bundle.js"), 404, "not_found")
    opened = make_app(cycles_server.base_url, APP_ENV="production", API_DOCS="on")
    assert page_links(opened.test_client()).document_url == "/openapi.json"


def test_on_in_development_unless_disabled(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    opened = make_app(cycles_server.base_url, APP_ENV="development").test_client()
    assert page_links(opened).document_url == "/openapi.json"
    assert opened.get("/docs/swagger-ui-bundle.js").mimetype == "text/javascript"
    closed = make_app(cycles_server.base_url, APP_ENV="development", API_DOCS="off")
    assert_error(closed.test_client().get("/docs"), 404, "not_found")
    assert closed.test_client().get("/openapi.json").status_code == 200


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_bad_api_docs_value_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app({**app_env("http://127.0.0.1:9", tmp_path), "API_DOCS": value})
    assert f"API_DOCS='{value}' is invalid: expected true or false" in str(raised.value)
