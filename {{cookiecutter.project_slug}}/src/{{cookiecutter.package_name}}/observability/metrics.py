"""Prometheus metrics, served at ``GET /metrics``.

Everything is per app (its own registry), and correct under several gunicorn workers:
with ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (``gunicorn.conf.py`` sets
one), every worker writes its values to files there and ``/metrics`` adds them up, in
whichever worker answers.

``/metrics`` shows every tenant's spend, so it is not for callers: it requires
``Authorization: Bearer <METRICS_TOKEN>`` when that is set, and without it is open only in
development and testing (production answers 404 until a token is configured).

The budget's part is heard, not called: :meth:`Metrics.subscribe` connects to the budget
signals (budget/signals.py) of one app, and every Cycles client the app makes is a
:class:`TimedCyclesClient` (create_app hands :meth:`Metrics.timed_client` to the Cycles
clients as their factory).

Every label takes its values from a closed set, whatever callers or servers send, so the
number of series cannot grow with traffic: routes are the app's URL rules (one label for
every unmatched path), methods the standard HTTP methods, statuses the codes HTTP defines,
tenants the configured ones, models the served ones; anything else is ``_other``. Error
codes and outcomes are the app's own stable codes.
"""

from __future__ import annotations

import hmac
import time
from http import HTTPMethod, HTTPStatus
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from runcycles import CyclesClient, CyclesConfig, CyclesResponse

from ..alerts.events import ALERT_TYPES
from ..budget import signals
from ..budget.holds import Hold, Settlement, Usage
from ..config import Settings, app_settings
from ..errors import ApiError

OTHER = "_other"  # what every label value outside its closed set becomes
OTHER_TENANT = OTHER  # tenant ids cannot contain "_", so this is never one
METHODS = frozenset(method.value for method in HTTPMethod)
STATUSES = frozenset(str(status.value) for status in HTTPStatus)

# actual cost / reserved estimate: how much of each hold the call used.
RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.5, 2.0)
CYCLES_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EXTENSION = "metrics"

bp = Blueprint("metrics", __name__)


class Metrics:
    """The app's metrics; recorded through the methods below, never by hand elsewhere."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenants = frozenset(settings.tenants)
        # Longest first: a snapshot of gpt-4o-mini is gpt-4o-mini's, not gpt-4o's.
        self._models = sorted({settings.llm_model, *settings.llm_models}, key=len, reverse=True)
        self._define_call_metrics()
        self._define_budget_metrics()
        self._define_alert_metrics()

    def _define_call_metrics(self) -> None:
        """Requests, Cycles calls and provider tokens."""
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request (a stream: until it ended), by route.",
            ["route"],
            registry=self.registry,
        )
        self.cycles_seconds = Histogram(
            "cycles_call_duration_seconds",
            "Latency of calls to the Cycles server, by operation and result.",
            ["operation", "result"],
            buckets=CYCLES_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llm_tokens",
            "Tokens the provider reported, by model and direction (input, output).",
            ["model", "direction"],
            registry=self.registry,
        )

    def _define_budget_metrics(self) -> None:
        """What the budget did: reservations, denials, settlements, charges."""
        self.reservations = Counter(
            "cycles_reservations",
            "Reservations asked for, by route and outcome "
            "(held, shadow, unguarded, denied, error), per tenant.",
            ["route", "outcome", "tenant"],
            registry=self.registry,
        )
        self.denials = Counter(
            "cycles_denials",
            "Requests refused by the budget (402) or its rate limit (429), by reason.",
            ["reason", "tenant"],
            registry=self.registry,
        )
        self.settlements = Counter(
            "cycles_settlements",
            "Holds settled, by outcome (committed, late, pending, event, released, recovered).",
            ["outcome", "tenant"],
            registry=self.registry,
        )
        self.charged = Counter(
            "cycles_charged_usd_microcents",
            "USD microcents charged to the budget, per tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.uncharged = Counter(
            "cycles_uncharged_usd_microcents",
            "Spend the budget could not record (no overdraft room left), per tenant.",
            ["tenant"],
            registry=self.registry,
        )
        self.cost_ratio = Histogram(
            "cycles_cost_estimate_ratio",
            "Actual cost / reserved estimate per call: the headroom the holds carry.",
            ["route"],
            buckets=RATIO_BUCKETS,
            registry=self.registry,
        )

    # --- recording ------------------------------------------------------------------

    def tenant_label(self, tenant: str | None) -> str:
        return tenant if tenant in self._tenants else OTHER_TENANT

    def model_label(self, model: str) -> str:
        """A served model (``LLM_MODEL``, ``LLM_MODELS``), also for a dated snapshot of it
        the provider reports (``gpt-4o-mini-2024-07-18``); any other name is ``_other``."""
        for served in self._models:
            if model == served or model.startswith(f"{served}-"):
                return served
        return OTHER

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """``route``: a URL rule of the app, or request_log's one label for unmatched paths."""
        self.requests.labels(route, method_label(method), status_label(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def reservation(self, route: str, outcome: str, tenant: str) -> None:
        self.reservations.labels(route, outcome, self.tenant_label(tenant)).inc()

    def denial(self, reason: str, tenant: str) -> None:
        self.denials.labels(reason, self.tenant_label(tenant)).inc()

    def settlement(self, hold: Hold, usage: Usage, settlement: Settlement) -> None:
        tenant = self.tenant_label(hold.tenant)
        self.settlements.labels(settlement.outcome, tenant).inc()
        self.charged.labels(tenant).inc(max(0, settlement.charged))
        if hold.estimate > 0:
            self.cost_ratio.labels(hold.route).observe(settlement.charged / hold.estimate)
        model = self.model_label(usage.model)
        self.tokens.labels(model, "input").inc(max(0, usage.input_tokens))
        self.tokens.labels(model, "output").inc(max(0, usage.output_tokens))

    def settled_later(self, tenant: str, outcome: str, uncharged: int) -> None:
        """What the settler did away from any request: ``recovered`` a stream of a worker
        that died, or found spend the budget could not take (``uncharged``)."""
        label = self.tenant_label(tenant)
        if outcome == "recovered":
            self.settlements.labels("recovered", label).inc()
        if uncharged > 0:
            self.uncharged.labels(label).inc(uncharged)

    def release(self, hold: Hold) -> None:
        self.settlements.labels("released", self.tenant_label(hold.tenant)).inc()
        if hold.estimate > 0:
            self.cost_ratio.labels(hold.route).observe(0.0)

    def _define_alert_metrics(self) -> None:
        """Cycles' webhook events received and the alerts the app raised itself
        (web/alert_routes.py). Closed labels: the alert event types or "other"; a
        configured threshold, "none" or "other"."""
        self.cycles_events = Counter(
            "cycles_webhook_events",
            "Cycles webhook events received (duplicates excluded), by type and threshold.",
            ["event_type", "threshold"],
            registry=self.registry,
        )
        self.app_alerts = Counter(
            "budget_alerts_raised",
            "Budget alerts the app raised from the balances Cycles answered (a crossing that"
            " a Cycles event reported first is not counted), by type and threshold.",
            ["event_type", "threshold"],
            registry=self.registry,
        )
        self._thresholds = {value: f"{value:g}" for value in self.settings.budget_alert_thresholds}

    def cycles_event(self, event_type: str, threshold: float | None) -> None:
        self.cycles_events.labels(*self._alert_labels(event_type, threshold)).inc()

    def app_alert(self, event_type: str, threshold: float | None) -> None:
        self.app_alerts.labels(*self._alert_labels(event_type, threshold)).inc()

    def _alert_labels(self, event_type: str, threshold: float | None) -> tuple[str, str]:
        kind = event_type if event_type in ALERT_TYPES else "other"
        level = "none" if threshold is None else self._thresholds.get(threshold, "other")
        return kind, level

    def cycles_call(self, operation: str, seconds: float, response: CyclesResponse) -> None:
        if response.is_success:
            result = "ok"
        elif response.status <= 0:
            result = "no_answer"
        else:
            result = status_label(response.status)
        self.cycles_seconds.labels(operation, result).observe(seconds)

    def timed_client(self, config: CyclesConfig) -> CyclesClient:
        """A runcycles client that records how long each Cycles call took (the factory of
        the app's Cycles clients)."""
        return TimedCyclesClient(config, self)

    # --- what the budget reports (budget/signals.py) -----------------------------------

    def subscribe(self, app: Flask) -> None:
        """Hear ``app``'s budget signals, and no other app's (bound methods: blinker keeps
        them as long as this object, which lives on the app)."""
        signals.reserved.connect(self._on_reserved, sender=app)
        signals.refused.connect(self._on_refused, sender=app)
        signals.settled.connect(self._on_settled, sender=app)
        signals.released.connect(self._on_released, sender=app)
        signals.settled_later.connect(self._on_settled_later, sender=app)

    def _on_reserved(self, sender: object, *, hold: Hold) -> None:
        self.reservation(hold.route, hold.mode if hold.mode != "enforce" else "held", hold.tenant)

    def _on_refused(
        self, sender: object, *, route: str, tenant: str, estimate: int, error: ApiError
    ) -> None:
        denied = error.status in (402, 429)
        self.reservation(route, "denied" if denied else "error", tenant)
        if denied:
            self.denial(error.error, tenant)

    def _on_settled(
        self, sender: object, *, hold: Hold, usage: Usage, settlement: Settlement
    ) -> None:
        self.settlement(hold, usage, settlement)

    def _on_released(self, sender: object, *, hold: Hold) -> None:
        self.release(hold)

    def _on_settled_later(
        self, sender: object, *, tenant: str, outcome: str, uncharged: int
    ) -> None:
        self.settled_later(tenant, outcome, uncharged)

    # --- exposition -----------------------------------------------------------------

    def exposition(self) -> bytes:
        directory = self.settings.prometheus_multiproc_dir
        if directory is None:
            return generate_latest(self.registry)
        # Several workers: add up what every worker (live or exited) wrote there.
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=str(directory))  # type: ignore[no-untyped-call]
        return generate_latest(combined)


def method_label(method: str) -> str:
    """A standard HTTP method; any other (a scanner's invention) is ``_other``."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """A status code HTTP defines; any other number is ``_other``."""
    code = str(status)
    return code if code in STATUSES else OTHER


class TimedCyclesClient(CyclesClient):
    """A runcycles client that times each Cycles call the guard makes."""

    def __init__(self, config: CyclesConfig, metrics: Metrics) -> None:
        super().__init__(config)
        self._metrics = metrics

    def _timed(self, operation: str, started: float, response: CyclesResponse) -> CyclesResponse:
        self._metrics.cycles_call(operation, time.perf_counter() - started, response)
        return response

    def create_reservation(self, request: Any) -> CyclesResponse:
        started = time.perf_counter()
        return self._timed("reserve", started, super().create_reservation(request))

    def commit_reservation(self, reservation_id: str, request: Any) -> CyclesResponse:
        started = time.perf_counter()
        return self._timed("commit", started, super().commit_reservation(reservation_id, request))

    def release_reservation(self, reservation_id: str, request: Any) -> CyclesResponse:
        started = time.perf_counter()
        response = super().release_reservation(reservation_id, request)
        return self._timed("release", started, response)

    def extend_reservation(self, reservation_id: str, request: Any) -> CyclesResponse:
        started = time.perf_counter()
        return self._timed("extend", started, super().extend_reservation(reservation_id, request))

    def create_event(self, request: Any) -> CyclesResponse:
        started = time.perf_counter()
        return self._timed("event", started, super().create_event(request))

    def get_balances(self, **query_params: str) -> CyclesResponse:
        started = time.perf_counter()
        return self._timed("balances", started, super().get_balances(**query_params))


@bp.get("/metrics")
def metrics_view() -> Response:
    metrics = app_metrics()
    settings = metrics.settings
    token = settings.metrics_token
    if token is None:
        if settings.app_env == "production":
            # Off until configured: every tenant's spend is in here.
            raise ApiError(404, "not_found", "The requested URL was not found on the server.")
    else:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.encode()
        )
        if not valid:
            raise ApiError(401, "unauthorized", "Send 'Authorization: Bearer <METRICS_TOKEN>'.")
    return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST.split(";")[0])


def init_app(app: Flask) -> Metrics:
    """Create the app's metrics, subscribed to its budget signals, and serve them."""
    metrics = app.extensions[EXTENSION] = Metrics(app_settings(app))
    metrics.subscribe(app)
    app.register_blueprint(bp)
    return metrics


def app_metrics(app: Flask | None = None) -> Metrics:
    """The app's metrics (``app`` defaults to the current app)."""
    metrics: Metrics = (app if app is not None else current_app).extensions[EXTENSION]
    return metrics
