"""The admin API's webhook subscriptions as `flask cycles provision` uses them: subscribe the
app's receiver to its Cycles tenants' budget alerts.

Shapes of the reference admin API (cycles-server-admin ``WebhookAdminController``):
``POST /v1/admin/webhooks?tenant_id=`` with ``url``, ``event_types``,
``thresholds.budget_utilization`` and ``signing_secret`` (201 ``{subscription,
signing_secret}``); ``GET /v1/admin/webhooks?tenant_id=`` lists ``subscriptions``. The
events service then POSTs each event to the URL signed with that secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .admin_api import Endpoint

# Crossing a configured fraction, and remaining reaching 0 (what the reference runtime
# server emits at 100%, with threshold 1.0).
ALERT_EVENT_TYPES = ("budget.threshold_crossed", "budget.exhausted")


def subscribe_alerts(
    admin: Endpoint, cycles_tenant: str, url: str, secret: str, thresholds: Sequence[float]
) -> str:
    """Subscribe ``url`` to ``cycles_tenant``'s budget alerts, unless a subscription to that
    URL exists (kept as it is); the subscription id."""
    params = {"tenant_id": cycles_tenant}
    _, listed = admin.call("GET", "/v1/admin/webhooks", params=params)
    for sub in listed.get("subscriptions") or []:
        if isinstance(sub, dict) and sub.get("url") == url:
            click.echo(f"alerts webhook of {cycles_tenant}: exists (unchanged)")
            return str(sub.get("subscription_id"))
    _, created = admin.call(
        "POST",
        "/v1/admin/webhooks",
        params=params,
        body={
            "url": url,
            "event_types": list(ALERT_EVENT_TYPES),
            "thresholds": {"budget_utilization": list(thresholds)},
            "signing_secret": secret,
        },
        accept=(201,),
    )
    subscription = created.get("subscription") or {}
    click.echo(f"alerts webhook of {cycles_tenant}: created")
    return str(subscription.get("subscription_id"))
