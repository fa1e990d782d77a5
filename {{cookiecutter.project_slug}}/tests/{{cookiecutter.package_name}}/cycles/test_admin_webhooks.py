"""Subscribing the receiver through the admin API (the embedded server speaks it)."""

from __future__ import annotations

from pathlib import Path

from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from {{ cookiecutter.package_name }}.cycles.admin_webhooks import ALERT_EVENT_TYPES, subscribe_alerts
from localcycles import LocalCyclesServer

ADMIN_KEY = "test-admin-key"


def test_subscribing_twice_keeps_one_subscription_with_the_thresholds(tmp_path: Path) -> None:
    with LocalCyclesServer(str(tmp_path / "l.sqlite3"), admin_key=ADMIN_KEY) as server:
        server.ledger.create_tenant("acme")
        admin = Endpoint(server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
        url = "http://127.0.0.1:9/webhooks/cycles"
        first = subscribe_alerts(admin, "acme", url, "s" * 32, (0.8, 1.0))
        again = subscribe_alerts(admin, "acme", url, "s" * 32, (0.8, 1.0))
        (sub,) = server.webhooks.subscriptions("acme")
    assert first == again == sub.subscription_id
    assert sub.event_types == ALERT_EVENT_TYPES and sub.thresholds == (0.8, 1.0)
    assert sub.secret == "s" * 32
