"""Budget signals: what the budget tells its listeners, and only the app's own listeners."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from blinker import Signal
from flask import Flask

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.budget import signals
from localcycles import LocalCyclesServer

Heard = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def listen() -> Iterator[Callable[[Flask], Heard]]:
    """``listen(app)``: every budget signal ``app`` sends, in order, as (name, data)."""
    connected: list[tuple[Signal, Callable[..., None]]] = []

    def start(app: Flask) -> Heard:
        heard: Heard = []
        for signal in (
            signals.reserved,
            signals.refused,
            signals.settled,
            signals.released,
            signals.settled_later,
        ):

            def note(sender: object, _name: str = signal.name, **data: Any) -> None:
                heard.append((_name, data))

            signal.connect(note, sender=app)
            connected.append((signal, note))
        return heard

    yield start
    for signal, note in connected:
        signal.disconnect(note)


def test_a_served_request_is_reserved_then_settled_for_what_it_cost(
    app: Flask, listen: Callable[[Flask], Heard]
) -> None:
    heard = listen(app)
    response = app.test_client().post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme"))
    assert response.status_code == 200
    assert [name for name, _ in heard] == ["budget-reserved", "budget-settled"]
    hold = heard[0][1]["hold"]
    assert (hold.tenant, hold.route, hold.mode) == ("acme", "chat", "enforce")
    assert hold.request_id == response.headers["X-Request-ID"]
    settled = heard[1][1]
    assert settled["hold"] is hold
    assert settled["settlement"].outcome == "committed"
    assert settled["settlement"].charged == response.get_json()["cost_usd_microcents"]
    assert settled["usage"].output_tokens == response.get_json()["usage"]["output_tokens"]


def test_a_denial_is_refused_with_the_error_the_caller_gets(
    app: Flask, provisioner: Provisioner, listen: Callable[[Flask], Heard]
) -> None:
    provisioner.set_budget("acme", 0)
    heard = listen(app)
    response = app.test_client().post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme"))
    assert response.status_code == 402
    ((name, data),) = heard
    assert name == "budget-refused"
    assert (data["route"], data["tenant"]) == ("chat", "acme")
    assert data["estimate"] > 0
    assert (data["error"].status, data["error"].error) == (402, response.get_json()["error"])


def test_an_app_hears_only_its_own_budget(
    app: Flask,
    cycles_server: LocalCyclesServer,
    make_app: Callable[..., Flask],
    listen: Callable[[Flask], Heard],
) -> None:
    other = make_app(cycles_server.base_url)
    heard_here, heard_there = listen(app), listen(other)
    response = other.test_client().post(
        "/chat", json={"prompt": "hi"}, headers=auth_headers("globex")
    )
    assert response.status_code == 200
    assert heard_here == []
    assert [name for name, _ in heard_there] == ["budget-reserved", "budget-settled"]
