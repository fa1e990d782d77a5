"""GET /readyz: ready when Cycles answers and the app's keys have not ended; /healthz stays
a liveness check."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, cycles_key, cycles_tenant_of
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK, iso
from localcycles import LocalCyclesServer

OWNER = cycles_tenant_of("acme")  # the Cycles tenant of acme's runtime key


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


def app_at(make_app: Callable[..., Flask], url: str, moment: datetime, **env: str) -> Flask:
    app = make_app(url, **env)
    app.extensions[CLOCK] = lambda: moment
    return app


def test_ready_with_a_warning_while_a_key_nears_its_end(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # the settings keep whole seconds
    ends = now + timedelta(days=5)
    expiry = {"CYCLES_KEY_EXPIRES_AT": f"{OWNER}={iso(ends)}"}
    response = app_at(make_app, cycles_server.base_url, now, **expiry).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "warning": f"The Cycles API key of {OWNER} expires {ends.date().isoformat()} "
        "(5 days left): run `flask cycles provision` to rotate it.",
    }
    earlier = now - timedelta(days=30)  # 35 days left: outside CYCLES_KEY_WARN_DAYS (14)
    client = app_at(make_app, cycles_server.base_url, earlier, **expiry).test_client()
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_not_ready_once_a_keys_recorded_expiry_has_passed(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    ends = datetime.now(UTC) + timedelta(days=1)
    expiry = {"CYCLES_KEY_EXPIRES_AT": f"{OWNER}={iso(ends)}", "CYCLES_FAIL_OPEN": "true"}
    later = ends + timedelta(minutes=1)
    client = app_at(make_app, cycles_server.base_url, later, **expiry).test_client()
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert body["message"].startswith(f"The Cycles API key of {OWNER} expired ")


def test_a_refused_key_is_not_ready_even_when_failing_open(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    """Fail-open serves only while Cycles is silent: a refused key fails every call."""
    client = make_app(cycles_server.base_url, CYCLES_FAIL_OPEN="true").test_client()
    assert client.get("/readyz").get_json() == {"status": "ready"}
    assert cycles_server.ledger.revoke_api_key(cycles_key(OWNER))
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert body["message"] == "Cycles refuses the app's calls (cycles_misconfigured)."
