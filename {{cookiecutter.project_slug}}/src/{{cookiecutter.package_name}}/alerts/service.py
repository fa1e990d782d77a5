"""The app's alerts: receive a verified Cycles event, drop a duplicate, queue its forward.

One :class:`Alerts` per app (``app.extensions``): its store and forwarder. Which app tenant
an event belongs to comes from tenancy.py: the tenant whose budget lives at the event's
Cycles tenant and scope (the budget `flask cycles provision` creates); an event for another
scope is logged and counted, never forwarded.

A tenant gets one alert per threshold per period: besides the event id, each alert claims
its (tenant, scope, threshold, period) mark, so the reference server's ``budget.exhausted``
and the development server's ``budget.threshold_crossed`` at 1.0 reach a tenant once. The
period is the tenant's plan period the event happened in (``period_of``, wired in by the
web layer), else its UTC day.

Forwards a stopped process left behind are resumed when an app starts (once per process,
``BUDGET_ALERTS_RESUME``), not only when the next event arrives.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app

from ..config import Settings, app_settings
from ..cycles import tenancy
from .destinations import Destinations
from .events import CyclesEvent, alert_payload, parse_event
from .forwarder import Forwarder
from .store import Accepted, AlertStore

log = logging.getLogger(__name__)

EXTENSION = "alerts"
# (app tenant, when) -> the key of the billing period ``when`` falls in
PeriodOf = Callable[[str, datetime], str]


def utc_day(tenant: str, when: datetime) -> str:
    return "day:" + when.astimezone(UTC).date().isoformat()


@dataclass(frozen=True)
class Outcome:
    event: CyclesEvent
    tenant: str | None  # the app tenant the event is about, if any
    duplicate: bool
    forwarded: bool  # queued for the tenant's URL


class Alerts:
    def __init__(
        self,
        settings: Settings,
        store: AlertStore,
        forwarder: Forwarder,
        period_of: PeriodOf = utc_day,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.period_of = period_of
        self._resumed_pid = 0

    def resume(self) -> None:
        """Start the worker if the outbox holds forwards (once per process: a forked worker
        resumes on its own first request)."""
        if self._resumed_pid == os.getpid():
            return
        self._resumed_pid = os.getpid()
        try:
            queued = self.store.pending()
        except (OSError, sqlite3.Error):
            # Nothing is lost: the rows stay queued, and the next event starts the worker.
            log.exception("alerts: the outbox could not be read; forwards resume later")
            return
        if queued:
            log.info("alerts: %d queued forwards resumed", queued)
            self.forwarder.kick()

    def mark(self, event: CyclesEvent, tenant: str) -> str:
        """The crossing an alert is about: one forward per tenant, scope, threshold, period."""
        period = self.period_of(tenant, event.occurred_at(datetime.now(UTC)))
        return f"{tenant}|{event.scope}|{event.threshold!r}|{period}"

    def tenant_of(self, event: CyclesEvent) -> str | None:
        for tenant in self.settings.tenants:
            if (
                tenancy.cycles_tenant(self.settings, tenant).lower() == event.tenant_id.lower()
                and tenancy.budget_scope(self.settings, tenant).lower() == event.scope
            ):
                return tenant
        return None

    def receive(self, body: bytes) -> Outcome:
        """Take a verified event's body (ValueError when it is not an event)."""
        event = parse_event(body)
        tenant = self.tenant_of(event)
        forward = mark = None
        if event.is_alert and tenant is not None and event.threshold is not None:
            mark = self.mark(event, tenant)
            if self.store.webhook(tenant) is not None:
                forward = (tenant, event.event_id, event.event_type, alert_payload(event, tenant))
        accepted = self.store.accept(event.event_id, forward, mark)
        if self.store.next_due() is not None:
            # New work, or forwards left by an earlier process (the worker starts lazily).
            self.forwarder.kick()
        return Outcome(event, tenant, not accepted, accepted == Accepted.QUEUED)


def init_app(app: Flask, period_of: PeriodOf = utc_day) -> Alerts:
    settings = app_settings(app)
    store = AlertStore(settings.cycles_journal_dir)
    forwarder = Forwarder(store, Destinations(settings.budget_webhook_allow_networks))
    alerts = Alerts(settings, store, forwarder, period_of)
    app.extensions[EXTENSION] = alerts
    if settings.budget_alerts_resume:
        alerts.resume()
        app.before_request(alerts.resume)
    return alerts


def app_alerts(app: Flask | None = None) -> Alerts:
    alerts: Alerts = (app if app is not None else current_app).extensions[EXTENSION]
    return alerts
