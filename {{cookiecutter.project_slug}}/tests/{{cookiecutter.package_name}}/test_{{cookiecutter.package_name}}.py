"""create_app: each concern on the app under its own key, and nothing started until used."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask

from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.config import Settings, app_settings
from {{ cookiecutter.package_name }}.cycles.clients import cycles_clients
from {{ cookiecutter.package_name }}.llm import app_provider
from {{ cookiecutter.package_name }}.observability.metrics import app_metrics
from localcycles import LocalCyclesServer


def test_every_concern_is_on_the_app_and_reached_through_its_own_module(app: Flask) -> None:
    assert isinstance(app_settings(app), Settings)
    assert app_provider(app).name == "fake"
    assert budget_service(app).cycles is cycles_clients(app)
    assert app_metrics(app).settings is app_settings(app)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/chat", "/metrics", "/healthz"} <= rules


def test_two_apps_share_no_extension(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    one, two = make_app(cycles_server.base_url), make_app(cycles_server.base_url)
    shared = {
        key
        for key, value in one.extensions.items()
        if key in two.extensions and two.extensions[key] is value
    }
    assert shared == set()


def test_building_an_app_starts_no_thread(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    # `flask --help` and `flask routes` build the app too: nothing may start until used.
    before = set(threading.enumerate())
    make_app(cycles_server.base_url)
    assert set(threading.enumerate()) - before == set()
