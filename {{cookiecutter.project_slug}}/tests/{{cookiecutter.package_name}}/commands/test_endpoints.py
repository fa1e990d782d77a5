"""Where `flask cycles` finds Cycles: the admin API (a missing setting named), the runtime
server, and where an app tenant's budget lives."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from flask import Flask

from conftest import app_env, budget_scope, cycles_tenant_of
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.commands.endpoints import (
    admin_endpoint,
    budget_home,
    runtime_url,
)
from {{ cookiecutter.package_name }}.cycles.clients import close

SERVER = "http://cycles.internal:7878"


def app_with(tmp_path: Path, **settings: str) -> Flask:
    return create_app({**app_env(SERVER + "/", tmp_path), **settings})


def test_the_admin_api_needs_its_url_and_key(tmp_path: Path) -> None:
    apps = [
        app_with(tmp_path),
        app_with(tmp_path, CYCLES_ADMIN_URL="http://admin:7979/"),
        app_with(tmp_path, CYCLES_ADMIN_URL="http://admin:7979/", CYCLES_ADMIN_API_KEY="k"),
    ]
    try:
        with pytest.raises(click.ClickException, match="CYCLES_ADMIN_URL is not set"):
            admin_endpoint(apps[0])
        with pytest.raises(click.ClickException, match="CYCLES_ADMIN_API_KEY is not set"):
            admin_endpoint(apps[1])
        endpoint = admin_endpoint(apps[2])
        assert endpoint.url == "http://admin:7979"
        assert endpoint.headers == {"X-Admin-API-Key": "k"}
    finally:
        for app in apps:
            close(app)


def test_the_runtime_server_and_budget_homes_are_the_apps(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    try:
        assert runtime_url(app) == SERVER
        home = budget_home(app, "acme")
        assert (home.cycles_tenant, home.scope) == (cycles_tenant_of("acme"), budget_scope("acme"))
    finally:
        close(app)
