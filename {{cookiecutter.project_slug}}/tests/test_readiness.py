"""GET /readyz: ready when Cycles answers; /healthz stays a liveness check."""

from __future__ import annotations

import socket
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from conftest import assert_error


def closed_port_url() -> str:
    """A local URL nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_ready_when_cycles_answers(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_not_ready_without_cycles_but_still_alive(make_app: Callable[..., Flask]) -> None:
    client = make_app(closed_port_url()).test_client()
    assert_error(client.get("/readyz"), 503, "not_ready")
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_fail_open_reports_degraded(make_app: Callable[..., Flask]) -> None:
    client = make_app(closed_port_url(), CYCLES_FAIL_OPEN="true").test_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "degraded"}
