"""The alerts endpoints: Cycles' signed events in, tenants' webhook URLs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import assert_error, auth_headers
from {{ cookiecutter.package_name }}.alerts.service import app_alerts
from {{ cookiecutter.package_name }}.alerts.signatures import sign
from localcycles import LocalCyclesServer
from support.tenancy_kit import budget_scope, cycles_tenant_of
from support.webhook_receiver import webhook_receiver

SECRET = "cycles-webhook-secret-for-tests"


@pytest.fixture
def alert_app(cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]) -> Flask:
    return make_app(cycles_server.base_url, CYCLES_WEBHOOK_SECRET=SECRET)


def event(event_id: str = "evt_1", threshold: float = 0.8, **extra: Any) -> bytes:
    body = {
        "event_id": event_id,
        "event_type": "budget.threshold_crossed",
        "category": "budget",
        "timestamp": "2026-12-02T10:00:00.000Z",
        "tenant_id": cycles_tenant_of("acme"),
        "scope": budget_scope("acme"),
        "source": "cycles-server",
        "data": {"scope": budget_scope("acme"), "threshold": threshold, "spent": 81},
        **extra,
    }
    return json.dumps(body).encode()


def deliver(client: FlaskClient, body: bytes, secret: str = SECRET) -> Any:
    headers = {"Content-Type": "application/json", "X-Cycles-Signature": sign(secret, body)}
    return client.post("/webhooks/cycles", data=body, headers=headers)


def counted(client: FlaskClient, event_type: str, threshold: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    labels = f'event_type="{event_type}",threshold="{threshold}"'
    wanted = "cycles_webhook_events_total{" + labels + "}"
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_the_receiver_is_off_without_its_secret(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    client = make_app(cycles_server.base_url).test_client()
    assert_error(deliver(client, event()), 404, "not_found")


def test_a_bad_signature_is_refused_and_nothing_is_recorded(alert_app: Flask) -> None:
    client = alert_app.test_client()
    assert_error(deliver(client, event(), secret="not-the-secret-at-all"), 401, "invalid_signature")
    unsigned = client.post("/webhooks/cycles", data=event())
    assert_error(unsigned, 401, "invalid_signature")
    assert counted(client, "budget.threshold_crossed", "0.8") == 0
    assert app_alerts(alert_app).store.accept("evt_1", None)  # never recorded


def test_an_event_is_counted_once_and_a_duplicate_dropped(
    alert_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = alert_app.test_client()
    first = deliver(client, event())
    assert first.status_code == 200 and first.get_json() == {
        "status": "received",
        "duplicate": False,
    }
    again = deliver(client, event())
    assert again.get_json()["duplicate"] is True
    assert counted(client, "budget.threshold_crossed", "0.8") == 1
    deliver(client, event("evt_2", threshold=0.5))  # not a configured threshold
    deliver(client, event("evt_3", event_type="tenant.created"))
    assert counted(client, "budget.threshold_crossed", "other") == 1
    assert counted(client, "other", "0.8") == 1
    assert "cycles event evt_1 budget.threshold_crossed tenant=acme" in caplog.text


def test_a_body_that_is_no_event_is_a_400(alert_app: Flask) -> None:
    assert_error(deliver(alert_app.test_client(), b"[1, 2]"), 400, "invalid_event")


def test_a_tenant_sets_sees_and_removes_its_url(alert_app: Flask) -> None:
    client = alert_app.test_client()
    acme = auth_headers("acme")
    assert_error(client.get("/budget/webhook", headers=acme), 404, "not_found")
    put = client.put("/budget/webhook", json={"url": "http://127.0.0.1:9/hook"}, headers=acme)
    assert put.status_code == 200
    secret = put.get_json()["secret"]
    assert secret.startswith("whsec_")
    shown = client.get("/budget/webhook", headers=acme).get_json()
    assert shown == {"url": "http://127.0.0.1:9/hook"}
    stored = app_alerts(alert_app).store.webhook("acme")
    assert stored is not None and stored.secret == secret
    assert_error(client.get("/budget/webhook", headers=auth_headers("globex")), 404, "not_found")
    assert client.delete("/budget/webhook", headers=acme).status_code == 200
    assert_error(client.delete("/budget/webhook", headers=acme), 404, "not_found")


@pytest.mark.parametrize(
    "body", [{"url": "ftp://x/y"}, {"url": "http://u:p@x/y"}, {"url": 3}, {}, ["x"]]
)
def test_a_bad_url_is_a_400(alert_app: Flask, body: Any) -> None:
    response = alert_app.test_client().put(
        "/budget/webhook", json=body, headers=auth_headers("acme")
    )
    assert_error(response, 400, "invalid_request")


def test_production_takes_only_https(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    client = make_app(cycles_server.base_url, APP_ENV="production").test_client()
    acme = auth_headers("acme")
    plain = client.put("/budget/webhook", json={"url": "http://93.184.215.14/h"}, headers=acme)
    assert "https://" in assert_error(plain, 400, "invalid_request")["message"]
    tls = client.put("/budget/webhook", json={"url": "https://93.184.215.14/h"}, headers=acme)
    assert tls.status_code == 200


def test_the_tenant_routes_need_a_caller(alert_app: Flask) -> None:
    assert_error(alert_app.test_client().get("/budget/webhook"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is an internal address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is an internal address"),
        ("http://[fd00::1]/hook", "fd00::1 is an internal address"),
        ("http://localhost:9/hook", "localhost ("),
        ("http://u:p@93.184.215.14/hook", "user:password@"),
        ("https://93.184.215.14/" + "a" * 2048, "longer than 2048 characters"),
    ],
)
def test_an_internal_or_unsafe_url_is_refused_naming_why(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], url: str, reason: str
) -> None:
    # What production does by default (there, also https only).
    app = make_app(cycles_server.base_url, BUDGET_WEBHOOK_ALLOW_NETWORKS="none")
    put = app.test_client().put("/budget/webhook", json={"url": url}, headers=auth_headers("acme"))
    assert reason in assert_error(put, 400, "invalid_request")["message"]
    assert app_alerts(app).store.webhook("acme") is None


def test_an_alert_period_is_the_tenant_plan_period_else_the_utc_day(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(cycles_server.base_url, BUDGET_PLANS="pro=5/month", TENANT_PLANS="acme=pro")
    period_of = app_alerts(app).period_of
    when = datetime(2026, 12, 2, 23, 59, tzinfo=UTC)
    assert period_of("acme", when) == "month:2026-12-01T00:00:00+00:00"
    assert period_of("globex", when) == "day:2026-12-02"


def test_with_a_signing_key_the_alerts_file_holds_no_secret_and_alerts_verify(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        cycles_server.base_url, CYCLES_WEBHOOK_SECRET=SECRET, BUDGET_ALERT_SIGNING_KEY="k" * 43
    )
    client = app.test_client()
    with webhook_receiver() as tenant_url:
        put = client.put(
            "/budget/webhook", json={"url": tenant_url.url}, headers=auth_headers("acme")
        )
        secret = put.get_json()["secret"]
        assert deliver(client, event()).status_code == 200
        (got,) = tenant_url.wait_for(1)
        app_alerts(app).forwarder.stop()
    assert got.headers["x-budget-alert-signature"] == sign(secret, got.body)
    store = app_alerts(app).store.path
    on_disk = b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))
    assert secret.encode() not in on_disk
    assert secret.split("_", 1)[1].encode() not in on_disk
