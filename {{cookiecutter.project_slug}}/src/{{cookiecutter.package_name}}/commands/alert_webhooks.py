"""Provisioning's part for budget alerts: subscribe the app's receiver (CYCLES_WEBHOOK_URL)
to each Cycles tenant's threshold events, with BUDGET_ALERT_THRESHOLDS, signed with
CYCLES_WEBHOOK_SECRET (the secret the receiver verifies)."""

from __future__ import annotations

from collections.abc import Iterable

import click
from flask import Flask

from ..config import app_settings
from ..cycles.admin_api import Endpoint
from ..cycles.admin_webhooks import subscribe_alerts


def subscribe_receiver(app: Flask, admin: Endpoint, cycles_tenants: Iterable[str]) -> None:
    settings = app_settings(app)
    if settings.cycles_webhook_url is None or settings.cycles_webhook_secret is None:
        click.echo("alerts webhook: skipped (CYCLES_WEBHOOK_URL is not set)")
        return
    url = settings.cycles_webhook_url
    for cycles_tenant in dict.fromkeys(cycles_tenants):
        subscribe_alerts(
            admin, cycles_tenant, url, settings.cycles_webhook_secret,
            settings.budget_alert_thresholds,
        )  # fmt: skip
