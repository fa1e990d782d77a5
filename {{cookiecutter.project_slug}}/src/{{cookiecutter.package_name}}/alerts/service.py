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

The app also sees its tenants' balances (every reservation answer carries them) and raises
the configured thresholds itself (:meth:`Alerts.observe`, called once a call is charged):
the reference cycles-server emits ``budget.exhausted`` but not yet
``budget.threshold_crossed``, so against it the 80% and 95% alerts come from here, and all
of them do where no events service runs. The same mark keeps a crossing to one alert,
whoever saw it first.

Forwards a stopped process left behind are resumed when an app starts (once per process,
``BUDGET_ALERTS_RESUME``), not only when the next event arrives.
"""

from __future__ import annotations

import hashlib
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
from .events import EXHAUSTED, THRESHOLD_CROSSED, CyclesEvent, alert_payload, parse_event
from .forwarder import Forwarder
from .store import Accepted, AlertStore
from .tenant_secrets import TenantSecrets

log = logging.getLogger(__name__)

EXTENSION = "alerts"
# (app tenant, when) -> the key of the billing period ``when`` falls in
PeriodOf = Callable[[str, datetime], str]
# Crossings this process has raised or found raised: bounded, cleared when full (a cleared
# mark costs one more store lookup, never a second alert).
MAX_MARKS_REMEMBERED = 10_000


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
        self._marked: set[str] = set()

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
        return self._mark(tenant, event.scope, event.threshold, event.occurred_at(_now()))

    def _mark(self, tenant: str, scope: str, threshold: float | None, when: datetime) -> str:
        return f"{tenant}|{scope}|{threshold!r}|{self.period_of(tenant, when)}"

    def observe(
        self, tenant: str, allocated: int, remaining: int, when: datetime | None = None
    ) -> list[CyclesEvent]:
        """Raise the thresholds ``tenant``'s budget has crossed this period and no alert
        covers yet; the alerts raised. ``remaining`` is what its budget scope has left
        (holds and debt taken out, as Cycles counts it), so 1.0 is crossed exactly when
        nothing remains, as Cycles' ``budget.exhausted`` is."""
        if allocated <= 0:
            return []  # no allocation to take a fraction of (an unfunded budget)
        used = (allocated - remaining) / allocated
        if used < self.settings.budget_alert_thresholds[0]:  # increasing (config_alerts.py)
            return []  # most charges: below every threshold, nothing to look up
        when = _now() if when is None else when
        scope = tenancy.budget_scope(self.settings, tenant).lower()
        raised = []
        for threshold in self.settings.budget_alert_thresholds:
            if used < threshold:
                continue
            mark = self._mark(tenant, scope, threshold, when)
            if mark in self._marked:
                continue
            event = self._crossing(tenant, mark, threshold, used, (allocated, remaining), when)
            accepted = self.store.accept(event.event_id, self._forward(event, tenant), mark)
            if len(self._marked) >= MAX_MARKS_REMEMBERED:
                self._marked.clear()
            self._marked.add(mark)
            if accepted in (Accepted.RECORDED, Accepted.QUEUED):
                raised.append(event)
            if accepted == Accepted.QUEUED:
                self.forwarder.kick()
        return raised

    def _forward(self, event: CyclesEvent, tenant: str) -> tuple[str, str, str, bytes] | None:
        """The forward of ``event`` to ``tenant``'s URL, or None while it has none."""
        if self.store.webhook(tenant) is None:
            return None
        return tenant, event.event_id, event.event_type, alert_payload(event, tenant)

    def _crossing(
        self,
        tenant: str,
        mark: str,
        threshold: float,
        used: float,
        amounts: tuple[int, int],
        when: datetime,
    ) -> CyclesEvent:
        """The alert for one crossing the app saw (``mark``), shaped as the Cycles event it
        stands for. Its id is derived from the mark, so two workers that both see it record
        it once."""
        allocated, remaining = amounts
        scope = tenancy.budget_scope(self.settings, tenant).lower()
        digest = hashlib.sha256(mark.encode()).hexdigest()
        return CyclesEvent(
            event_id="app-" + digest[:32],
            event_type=EXHAUSTED if threshold >= 1.0 else THRESHOLD_CROSSED,
            tenant_id=tenancy.cycles_tenant(self.settings, tenant),
            scope=scope,
            data={
                "threshold": threshold,
                "utilization": round(used, 6),
                "allocated": allocated,
                "remaining": remaining,
            },
            timestamp=when.isoformat(),
        )

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
            forward = self._forward(event, tenant)
        accepted = self.store.accept(event.event_id, forward, mark)
        if self.store.next_due() is not None:
            # New work, or forwards left by an earlier process (the worker starts lazily).
            self.forwarder.kick()
        return Outcome(event, tenant, not accepted, accepted == Accepted.QUEUED)


def _now() -> datetime:
    return datetime.now(UTC)


def init_app(app: Flask, period_of: PeriodOf = utc_day) -> Alerts:
    settings = app_settings(app)
    store = AlertStore(settings.cycles_journal_dir)
    forwarder = Forwarder(
        store,
        Destinations(settings.budget_webhook_allow_networks),
        secrets=TenantSecrets(settings.budget_alert_signing_key),
    )
    alerts = Alerts(settings, store, forwarder, period_of)
    app.extensions[EXTENSION] = alerts
    if settings.budget_alerts_resume:
        alerts.resume()
        app.before_request(alerts.resume)
    return alerts


def app_alerts(app: Flask | None = None) -> Alerts:
    alerts: Alerts = (app if app is not None else current_app).extensions[EXTENSION]
    return alerts
