"""Budget alerts over HTTP: Cycles' events in, tenants' own webhook URLs.

- ``POST /webhooks/cycles``: the Cycles events service delivers here (the subscription
  `flask cycles provision` creates). The signature is verified with ``CYCLES_WEBHOOK_SECRET``
  (401 otherwise; 404 while it is unset), a redelivered event id is acknowledged and dropped,
  every event is logged and counted in ``/metrics``, and a threshold alert is queued for its
  tenant's URL (forwarded by a background worker, never on this request).
- ``PUT /budget/webhook`` ``{"url": ...}``: the caller's URL for its alerts (https; http
  only outside production; never an internal address, see ``alerts/destinations.py``).
  Answers the signing secret, once; a PUT again makes a new one. ``GET`` shows the URL,
  ``DELETE`` removes it.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime

from flask import Blueprint, Flask, Response, jsonify, request
from pydantic import BaseModel, Field

from .. import callers
from ..alerts import service
from ..alerts.destinations import MAX_URL_CHARS, Destinations, UnsafeUrl
from ..alerts.service import PeriodOf, app_alerts, utc_day
from ..alerts.signatures import CYCLES_SIGNATURE_HEADER, verify
from ..budget import signals
from ..budget.holds import Hold, Settlement
from ..budget.periods import period_bounds
from ..config import URL_RE, URL_RULE, Settings, app_settings
from ..cycles import key_expiry
from ..errors import ApiError
from ..observability.metrics import app_metrics
from .operations import CALLER_ERRORS, Operation, documented

log = logging.getLogger(__name__)

receiver_bp = Blueprint("cycles_webhooks", __name__)
tenant_webhook_bp = Blueprint("tenant_webhook", __name__)
tenant_webhook_bp.before_request(callers.authenticate)


class WebhookRequest(BaseModel):
    url: str = Field(
        max_length=MAX_URL_CHARS,
        pattern="^" + URL_RE.pattern + "$",
        description=f"Where alerts are POSTed: {URL_RULE} (https in production).",
    )


class WebhookResponse(BaseModel):
    url: str
    secret: str | None = Field(
        default=None,
        description="Signing secret (only in the PUT answer): verify X-Budget-Alert-Signature "
        "= 'sha256=' + hex HMAC-SHA256 of the raw body with it.",
    )


class WebhookRemoved(BaseModel):
    status: str = "removed"


class Received(BaseModel):
    status: str = "received"
    duplicate: bool = False


@receiver_bp.post("/webhooks/cycles")
@documented(
    Operation(
        "Receive a Cycles webhook event (the Cycles events service calls this)",
        "Received (or a duplicate, dropped).",
        Received,
        auth="open",
        errors=(400, 401, 404),
        notes={
            401: "`invalid_signature`: X-Cycles-Signature does not match the body.",
            404: "`not_found`: CYCLES_WEBHOOK_SECRET is not set.",
        },
    )
)
def receive_cycles_event() -> Response:
    secret = app_settings().cycles_webhook_secret
    if secret is None:
        raise ApiError(404, "not_found", "The Cycles webhook receiver is not configured.")
    body = request.get_data(cache=False)
    if not verify(secret, body, request.headers.get(CYCLES_SIGNATURE_HEADER)):
        raise ApiError(401, "invalid_signature", f"{CYCLES_SIGNATURE_HEADER} does not match.")
    try:
        outcome = app_alerts().receive(body)
    except ValueError as exc:
        raise ApiError(400, "invalid_event", f"Not a Cycles event: {exc}.") from None
    event = outcome.event
    log.info(
        "cycles event %s %s tenant=%s scope=%s threshold=%s%s",
        event.event_id, event.event_type, outcome.tenant or "-", event.scope or "-",
        event.threshold, " (duplicate, dropped)" if outcome.duplicate else "",
    )  # fmt: skip
    if not outcome.duplicate:
        app_metrics().cycles_event(event.event_type, event.threshold)
    return jsonify(Received(duplicate=outcome.duplicate).model_dump())


def checked_url(url: str) -> str:
    """A tenant's URL: https (http too outside production), no credentials or query, and
    no internal host (BUDGET_WEBHOOK_ALLOW_NETWORKS lists exceptions)."""
    settings = app_settings()
    production = settings.app_env == "production"
    try:
        Destinations(settings.budget_webhook_allow_networks).check(url)
    except UnsafeUrl as exc:
        raise ApiError(400, "invalid_request", f"{exc}.") from None
    if not URL_RE.fullmatch(url) or (production and not url.startswith("https://")):
        rule = "https://" + URL_RULE.split("://", 1)[1] if production else URL_RULE
        raise ApiError(400, "invalid_request", f"url must be {rule}.")
    return url


@tenant_webhook_bp.put("/budget/webhook")
@documented(
    Operation(
        "Set the URL that receives the caller's budget alerts",
        "The URL and its signing secret (shown only here).",
        WebhookResponse,
        request=WebhookRequest,
        errors=(400, *CALLER_ERRORS),
    )
)
def put_webhook() -> Response:
    payload = request.get_json(silent=True)
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str):
        raise ApiError(400, "invalid_request", 'Send {"url": "https://..."}.')
    tenant = callers.current_tenant()
    alerts = app_alerts()
    secret, kept = alerts.forwarder.secrets.issue(tenant)  # kept: no secret with a key set
    alerts.store.set_webhook(tenant, checked_url(url), kept)
    return jsonify(WebhookResponse(url=url, secret=secret).model_dump(exclude_none=True))


@tenant_webhook_bp.get("/budget/webhook")
@documented(
    Operation(
        "The URL that receives the caller's budget alerts",
        "The URL (the secret is never shown again).",
        WebhookResponse,
        errors=(404, *CALLER_ERRORS),
        notes={404: "`not_found`: no alert webhook is set."},
    )
)
def get_webhook() -> Response:
    webhook = app_alerts().store.webhook(callers.current_tenant())
    if webhook is None:
        raise ApiError(404, "not_found", "No alert webhook is set.")
    return jsonify(WebhookResponse(url=webhook.url).model_dump(exclude_none=True))


@tenant_webhook_bp.delete("/budget/webhook")
@documented(
    Operation(
        "Stop sending the caller's budget alerts",
        "Removed.",
        WebhookRemoved,
        errors=(404, *CALLER_ERRORS),
        notes={404: "`not_found`: no alert webhook is set."},
    )
)
def delete_webhook() -> Response:
    if not app_alerts().store.delete_webhook(callers.current_tenant()):
        raise ApiError(404, "not_found", "No alert webhook is set.")
    return jsonify(WebhookRemoved().model_dump())


def plan_periods(settings: Settings) -> PeriodOf:
    """An alert's period: the tenant's plan period it happened in, else the UTC day."""

    def period_of(tenant: str, when: datetime) -> str:
        plan = settings.plan_for(tenant)
        start = period_bounds(plan.period, when)[0] if plan is not None else None
        if plan is None or start is None:
            return utc_day(tenant, when)
        return f"{plan.period}:{start.isoformat()}"

    return period_of


def init_app(app: Flask) -> None:
    """The app's alerts (store, forwarder), the thresholds it watches, and these routes."""
    alerts = service.init_app(app, plan_periods(app_settings(app)))

    def watch_thresholds(
        sender: object, *, hold: Hold, settlement: Settlement, **_: object
    ) -> None:
        """Once a call is charged, raise any threshold its budget has crossed."""
        remaining = hold.remaining_after(settlement.charged)
        if hold.balance is None or remaining is None:
            return  # the reserve answer named no budget of the caller's
        try:
            raised = alerts.observe(
                hold.tenant, hold.balance.allocated, remaining, key_expiry.now(app)
            )
        except (OSError, sqlite3.Error):
            # The call is charged either way; the next charge tries the crossing again.
            log.exception("alerts: tenant %s: a threshold crossing was not recorded", hold.tenant)
            return
        for event in raised:
            log.info(
                "budget alert %s tenant=%s threshold=%s (seen by the app)",
                event.event_type, hold.tenant, event.threshold,
            )  # fmt: skip
            app_metrics(app).app_alert(event.event_type, event.threshold)

    # weak=False: the closure has no other owner; sender=app: only this app's charges.
    signals.settled.connect(watch_thresholds, sender=app, weak=False)
    app.register_blueprint(receiver_bp)
    app.register_blueprint(tenant_webhook_bp)
