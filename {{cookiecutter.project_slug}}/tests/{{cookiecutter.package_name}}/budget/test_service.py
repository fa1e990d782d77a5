"""The budget service: one per app, started with its first Cycles client, closed with them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.cycles.clients import close, cycles_clients
from localcycles import LocalCyclesServer


def settler_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "cycles-settler"}


def test_each_app_has_its_own_machinery_on_its_own_clients(
    app: Flask, cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    other = make_app(cycles_server.base_url)
    mine, theirs = budget_service(app), budget_service(other)
    assert mine.cycles is cycles_clients(app) and theirs.cycles is cycles_clients(other)
    assert mine.settler is not theirs.settler
    assert mine.keeper is not theirs.keeper
    assert mine.deny_cache is not theirs.deny_cache


def test_the_settler_starts_with_the_first_cycles_client(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    before = settler_threads()
    app = make_app(cycles_server.base_url)
    assert settler_threads() == before  # building the app starts nothing
    cycles_clients(app).client_for("acme")  # what a request, a probe or a command does
    (started,) = settler_threads() - before
    assert started.is_alive()


def test_closing_the_cycles_clients_stops_the_budget_threads(
    app: Flask, provisioner: Provisioner
) -> None:
    before = settler_threads()
    response = app.test_client().post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme"))
    assert response.status_code == 200
    (started,) = settler_threads() - before
    close(app)
    assert not started.is_alive()  # joined before the clients it uses were closed
