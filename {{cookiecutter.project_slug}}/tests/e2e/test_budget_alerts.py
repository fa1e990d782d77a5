"""Budget alerts end to end, offline: the embedded Cycles server emits threshold events to the
app's receiver (signed, as the Cycles events service does), the app forwards each to the
tenant's own URL (signed with the tenant's secret) from its background worker.

Spend past 80%, 95% and 100%: exactly one delivery per threshold (at 100% the server says
both budget.threshold_crossed and budget.exhausted: the tenant hears it once); a redelivered
event is dropped; on the next day (a tenant without a plan: the UTC day is its alert period)
after RESET_SPENT the thresholds fire again; the ledger is exact.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from conftest import ADMIN_KEY, UNIT, Provisioner, auth_headers
from {{ cookiecutter.package_name }}.alerts.service import app_alerts
from {{ cookiecutter.package_name }}.alerts.signatures import sign
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.config import app_settings
from {{ cookiecutter.package_name }}.cycles import tenancy
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from {{ cookiecutter.package_name }}.cycles.admin_webhooks import subscribe_alerts
from localcycles import LocalCyclesServer
from support.clocked_fixtures import ServerClock
from support.keys import cycles_key
from support.tenancy_kit import budget_scope, cycles_tenant_of
from support.webhook_receiver import WebhookReceiver, webhook_receiver

SECRET = "cycles-to-app-webhook-secret"
THRESHOLDS = (0.8, 0.95, 1.0)
PROMPT = "Write a haiku about careful spending."
MAX_TOKENS = 32


@pytest.fixture
def clocked_server(tmp_path: Path, server_clock: ServerClock) -> Iterator[LocalCyclesServer]:
    """The clocked server (support/clocked_fixtures.py) with the admin API on."""
    path = str(tmp_path / "clocked.sqlite3")
    server = LocalCyclesServer(path, admin_key=ADMIN_KEY, clock=server_clock).start()
    yield server
    server.stop()
    server.ledger.close()


@pytest.fixture
def tenant_url() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


class Stack:
    """The embedded Cycles server, the app behind a socket, and what was charged."""

    def __init__(self, server: LocalCyclesServer, app: Flask, provisioner: Provisioner) -> None:
        self.server, self.app, self.provisioner = server, app, provisioner
        self.client = app.test_client()
        self.charged = 0
        settings = app_settings(app)
        self.subject = tenancy.subject(settings, "acme")
        self.key = cycles_key(cycles_tenant_of("acme"))

    def chat(self) -> None:
        body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
        answer = self.client.post("/chat", json=body, headers=auth_headers("acme"))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        self.charged += answer.get_json()["cost_usd_microcents"]

    def spend(self, amount: int) -> None:
        """Spend straight on Cycles (another of the tenant's services, say)."""
        body = {
            "idempotency_key": uuid.uuid4().hex, "subject": self.subject,
            "action": {"kind": "llm.completion", "name": "batch"},
            "actual": {"unit": UNIT, "amount": amount},
        }  # fmt: skip
        answer = httpx.post(
            f"{self.server.base_url}/v1/events", json=body, headers={"X-Cycles-API-Key": self.key}
        )
        assert answer.status_code == 201, answer.text
        self.charged += answer.json()["charged"]["amount"]

    def spent(self) -> int:
        balance = self.provisioner.balance("acme")
        assert balance["reserved"] == 0
        assert balance["spent"] == self.charged  # the ledger is exact throughout
        return int(balance["spent"])

    def reset_spent(self, allocated: int) -> None:
        admin = Endpoint(self.server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
        admin.call(
            "POST", "/v1/admin/budgets/fund",
            params={"tenant_id": cycles_tenant_of("acme"), "scope": budget_scope("acme"),
                    "unit": UNIT},
            body={"operation": "RESET_SPENT", "amount": {"amount": allocated, "unit": UNIT},
                  "idempotency_key": uuid.uuid4().hex},
        )  # fmt: skip
        self.charged = 0


def levels(received: list[Any], secret: str) -> list[float]:
    for got in received:
        assert got.headers["x-budget-alert-signature"] == sign(secret, got.body)
    return [json.loads(got.body)["threshold"] for got in received]


DAY_MS = 86_400_000


def test_each_threshold_reaches_the_tenant_once_per_period(
    clocked_server: LocalCyclesServer,
    clocked: Provisioner,
    server_clock: ServerClock,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
    tenant_url: WebhookReceiver,
) -> None:
    reserve = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    if reserve == 0:
        pytest.skip("the prompted prices are zero: calls cost nothing")
    app = make_app(clocked_server.base_url, CYCLES_WEBHOOK_SECRET=SECRET)
    receiver_url = serve(app) + "/webhooks/cycles"
    admin = Endpoint(clocked_server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
    subscribe_alerts(admin, cycles_tenant_of("acme"), receiver_url, SECRET, THRESHOLDS)
    registered = app.test_client().put(
        "/budget/webhook", json={"url": tenant_url.url}, headers=auth_headers("acme")
    )
    tenant_secret = registered.get_json()["secret"]
    allocated = 20 * reserve  # a call's hold is 5% of the budget: it fits up to 95%
    clocked.set_budget("acme", allocated=allocated)
    stack = Stack(clocked_server, app, clocked)
    try:
        stack.spend(allocated * 8 // 10 - 1 - stack.spent())
        stack.chat()  # crosses 80%
        stack.spend(allocated * 95 // 100 - 1 - stack.spent())
        stack.chat()  # crosses 95%
        stack.spend(allocated)  # more than remains: charges what remains, 100%
        assert stack.spent() == allocated
        first = tenant_url.wait_for(3)
        assert levels(first, tenant_secret) == list(THRESHOLDS)

        # Cycles redelivers an event (at least once): acknowledged, dropped, not forwarded.
        again = json.dumps(
            {
                **json.loads(first[0].body),
                "event_id": json.loads(first[0].body)["id"],
                "event_type": "budget.threshold_crossed",
                "tenant_id": cycles_tenant_of("acme"),
                "scope": budget_scope("acme"),
            }
        )
        replay = app.test_client().post(
            "/webhooks/cycles",
            data=again,
            headers={"X-Cycles-Signature": sign(SECRET, again.encode())},
        )
        assert replay.get_json() == {"status": "received", "duplicate": True}

        server_clock.now_ms += DAY_MS  # the next day: its events are of the next period
        stack.reset_spent(allocated)  # the next period re-arms every threshold
        stack.spend(allocated // 2)
        stack.spend(allocated)
        assert stack.spent() == allocated
        second = tenant_url.wait_for(6)[3:]
        assert levels(second, tenant_secret) == list(THRESHOLDS)
        app_alerts(app).forwarder.stop()  # finishes what it posts: nothing left queued
        assert app_alerts(app).store.pending() == 0
        ids = [json.loads(got.body)["id"] for got in tenant_url.received]
        assert len(ids) == len(set(ids)) == 6
    finally:
        app_alerts(app).forwarder.stop()


def raised_total(app: Flask, threshold: str) -> float:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    wanted = 'budget_alerts_raised_total{event_type="budget.threshold_crossed",threshold="%s"}'
    lines = [line for line in text.splitlines() if line.startswith(wanted % threshold)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_without_threshold_events_the_app_raises_them_from_what_it_charges(
    clocked_server: LocalCyclesServer,
    clocked: Provisioner,
    make_app: Callable[..., Flask],
    tenant_url: WebhookReceiver,
) -> None:
    """As against the reference cycles-server (it emits no budget.threshold_crossed) or
    with no events service at all: nothing is subscribed, and the tenant still hears of
    80% and 95% once each, from the balances the app's own calls were answered with."""
    reserve = pricing.estimate(PROMPT, max_tokens=MAX_TOKENS)
    if reserve == 0:
        pytest.skip("the prompted prices are zero: calls cost nothing")
    app = make_app(clocked_server.base_url)
    registered = app.test_client().put(
        "/budget/webhook", json={"url": tenant_url.url}, headers=auth_headers("acme")
    )
    tenant_secret = registered.get_json()["secret"]
    allocated = 20 * reserve
    clocked.set_budget("acme", allocated=allocated)
    stack = Stack(clocked_server, app, clocked)
    try:
        stack.chat()  # far below 80%: nothing
        stack.spend(allocated * 8 // 10 - 1 - stack.spent())
        stack.chat()  # crosses 80%
        stack.chat()  # still between 80% and 95%: nothing new
        stack.spend(allocated * 95 // 100 - 1 - stack.spent())
        stack.chat()  # crosses 95%
        assert levels(tenant_url.wait_for(2), tenant_secret) == [0.8, 0.95]
        assert (raised_total(app, "0.8"), raised_total(app, "0.95")) == (1.0, 1.0)
        assert stack.spent() > allocated * 95 // 100
        app_alerts(app).forwarder.stop()
        assert app_alerts(app).store.pending() == 0
        assert len(tenant_url.received) == 2  # nothing else was sent
    finally:
        app_alerts(app).forwarder.stop()
