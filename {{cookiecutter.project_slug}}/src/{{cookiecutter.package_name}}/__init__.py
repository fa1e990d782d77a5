"""{{ cookiecutter.package_name }}: a Flask API whose LLM calls are budget-guarded by Cycles."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(overrides: Mapping[str, str] | None = None) -> Flask:
    """Build the application: the one place where settings, extensions and routes meet.

    ``overrides`` take precedence over the process environment and ``.env``
    (settings_source.py) and use the same variable names (``{"APP_ENV": "testing", ...}``),
    so tests configure the app as a deployment does.
    """
    # Imported here, not with the package: gunicorn's master imports serving/ (its settings
    # and workers), and the app's modules (their sockets, locks and threads) must first be
    # imported in a worker, after the gevent worker has patched the standard library.
    from flask import Flask

    from . import commands, errors, settings_source
    from .budget import rollover_timer, service
    from .config import SETTINGS_EXTENSION
    from .cycles import clients
    from .llm import PROVIDER_EXTENSION, build_provider
    from .observability import metrics, request_log
    from .web import alert_routes, bodies, docs, routes

    app = Flask(__name__, instance_relative_config=True)
    settings = settings_source.load(Path(app.instance_path), overrides)
    app.extensions[SETTINGS_EXTENSION] = settings
    app.config["TESTING"] = settings.app_env == "testing"
    app.config["MAX_CONTENT_LENGTH"] = bodies.max_body_bytes(settings)
    os.makedirs(app.instance_path, exist_ok=True)

    # Kept on the app so tests (and operators) can swap the provider per app.
    app.extensions[PROVIDER_EXTENSION] = build_provider(
        settings.llm_provider,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout,
    )
    errors.init_app(app)
    # Observability first: it subscribes to the app's budget signals and times every
    # Cycles call (its client factory), so the Cycles clients are built with it.
    app_metrics = metrics.init_app(app)
    request_log.init_app(app, app_metrics, json_lines=settings.log_format == "json")
    clients.init_app(app, client_factory=app_metrics.timed_client)
    service.init_app(app)
    rollover_timer.init_app(app)  # development: the embedded ledger's plans roll over
    app.register_blueprint(routes.bp)
    docs.init_app(app)  # GET /docs when API_DOCS is on
    alert_routes.init_app(app)  # budget alerts: Cycles' events in, tenants' URLs out
    commands.init_app(app)
    return app
