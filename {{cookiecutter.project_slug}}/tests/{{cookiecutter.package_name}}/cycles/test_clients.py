"""Cycles clients: one runcycles client per key, made by the factory given; what listens to
them hears of each client and of their closing first."""

from __future__ import annotations

from typing import Any

from flask import Flask
from runcycles import CyclesClient, CyclesConfig

from {{ cookiecutter.package_name }}.cycles.clients import (
    CyclesClients,
    client_created,
    closing,
    cycles_clients,
)
from {{ cookiecutter.package_name }}.observability.metrics import TimedCyclesClient


def test_one_client_per_key_from_the_factory_and_the_signals_around_them(app: Flask) -> None:
    source = cycles_clients(app)
    made: list[str] = []

    def factory(config: CyclesConfig) -> CyclesClient:
        made.append(config.api_key)
        return CyclesClient(config)

    clients = CyclesClients(source.settings, source.connection, factory)
    heard: list[str] = []
    first: CyclesClient | None = None

    def created(sender: Any) -> None:
        heard.append("created")

    def closed(sender: Any) -> None:
        heard.append("closing")
        # Listeners stop first: the clients are all still there while they do.
        assert clients.client_for("acme") is first

    client_created.connect(created, sender=clients)
    closing.connect(closed, sender=clients)
    try:
        first = clients.client_for("acme")
        assert clients.client_for("acme") is first
        clients.client_for("globex")
        keys = source.connection().api_keys
        assert made == list(dict.fromkeys([keys["acme"], keys["globex"]]))
        clients.close()
        assert heard == ["created", "created", "created", "closing", "created"]
    finally:
        client_created.disconnect(created)
        closing.disconnect(closed)


def test_the_app_times_every_cycles_call(app: Flask) -> None:
    # create_app hands the metrics' factory to the clients when it builds them.
    assert isinstance(cycles_clients(app).client_for("acme"), TimedCyclesClient)
