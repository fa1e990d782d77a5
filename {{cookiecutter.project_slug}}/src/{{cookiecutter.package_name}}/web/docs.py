"""``GET /docs``: the API document (``/openapi.json``) as a page to read and try, offline.

Swagger UI, from the files the ``flask-swagger-ui`` package ships (its ``dist`` folder;
only the two the page needs are served), so the page needs no CDN and works on a machine
without internet. The page and its start-up script are this module's; the script reads
the document's URL from the page and turns off Swagger UI's online validator badge, and
the page's Content-Security-Policy lets it load nothing from anywhere but this app.

``API_DOCS`` turns it on or off: on by default in development and testing, off (404) in
production unless enabled. These routes are for people, not API clients: they are kept
out of the API document (as FastAPI keeps its own docs out).
"""

from __future__ import annotations

from html import escape
from importlib import resources
from importlib.resources.abc import Traversable

from flask import Blueprint, Flask, Response, abort, url_for

from ..config import app_settings
from .operations import undocumented

# The package whose Swagger UI build is served (a runtime dependency in pyproject.toml).
ASSETS_PACKAGE = "flask_swagger_ui"
ASSETS_FOLDER = "dist"
INIT_SCRIPT = "swagger-init.js"
# Served files: name -> media type. Nothing else of the package is reachable.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
}
ONE_DAY_S = 86_400

# Self only: scripts and styles from these routes, the document from /openapi.json.
# Swagger UI sets inline styles and draws a few icons as data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

bp = Blueprint("docs", __name__)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui" data-url="{document}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""

# Swagger UI's start-up, kept out of the page so the policy needs no 'unsafe-inline' script.
# validatorUrl null: no badge fetched from validator.swagger.io.
INIT = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def assets_folder() -> Traversable:
    return resources.files(ASSETS_PACKAGE).joinpath(ASSETS_FOLDER)


@bp.get("/docs")
@undocumented
def page() -> Response:
    html = PAGE.format(
        title=escape("{{ cookiecutter.project_slug }} API"),
        css=escape(url_for("docs.asset", name="swagger-ui.css")),
        bundle=escape(url_for("docs.asset", name="swagger-ui-bundle.js")),
        init=escape(url_for("docs.asset", name=INIT_SCRIPT)),
        document=escape(url_for("api.openapi_document")),
    )
    return _answer(Response(html, mimetype="text/html"))


@bp.get("/docs/<name>")
@undocumented
def asset(name: str) -> Response:
    if name == INIT_SCRIPT:
        response = Response(INIT, mimetype="text/javascript")
    elif name in ASSETS:
        data = assets_folder().joinpath(name).read_bytes()
        response = Response(data, mimetype=ASSETS[name])
    else:
        abort(404)
    response.cache_control.public = True
    response.cache_control.max_age = ONE_DAY_S
    return _answer(response)


def _answer(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    """Serve the docs page when ``API_DOCS`` is on (the routes do not exist otherwise)."""
    if app_settings(app).api_docs:
        app.register_blueprint(bp)
