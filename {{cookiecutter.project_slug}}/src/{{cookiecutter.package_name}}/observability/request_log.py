"""Request ids and one log line per request.

Every response carries ``X-Request-ID``: the caller's own id when it is a safe value
(:data:`SAFE_REQUEST_ID`), otherwise a new one, kept as ``g.request_id``. The guard passes
it on to Cycles in the reservation's, commit's and spend event's ``metadata.request_id``,
so a charge in the Cycles ledger can be traced back to the request (and to its log line).

Each request is followed by a :class:`RequestTrace`: the budget's signals (budget/signals.py)
note the hold, the denial or the settlement on it, and when the request is over one line
is logged (JSON in production, plain text in development; ``LOG_FORMAT``) with the method,
route, status, tenant, reservation id, estimate, charge and latency, and the request's
metrics are recorded. Never a key or prompt text. A streamed answer is over only when its
stream has ended and settled, so its line is written when the server closes the response.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, has_request_context, request

from ..budget import signals
from ..budget.holds import Hold, Settlement, Usage
from ..errors import ApiError
from ..settings_source import ensure_handler

if TYPE_CHECKING:
    from .metrics import Metrics

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's id may look like to be kept (and sent on to Cycles and the logs):
# letters, digits and . _ : - only, at most 64 characters. Anything else is replaced.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
LOGGER_NAME = __name__.rsplit(".", 1)[0] + ".requests"
EXTENSION = "request_log"
UNMATCHED_ROUTE = "unmatched"  # 404s: one label, not one per path a scanner tried

log = logging.getLogger(LOGGER_NAME)


def request_id_from(value: str | None) -> str:
    """The caller's id if it is safe to echo, log and send to Cycles; else a new one."""
    if value is not None and SAFE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


@dataclass(eq=False)
class RequestTrace:
    """What one request did, filled in as it goes; logged once when it is over."""

    request_id: str
    method: str
    started: float
    metrics: Metrics | None = field(default=None, repr=False)
    json_lines: bool = True
    route: str = UNMATCHED_ROUTE
    status: int = 0
    tenant: str | None = None
    reservation_id: str | None = None
    estimate: int | None = None
    charged: int | None = None
    outcome: str | None = None  # how the budget side ended: committed, released, denied...
    error: str | None = None  # the stable error code of a refused request
    stream: bool = False
    _done: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _finished: bool = False

    def finish(self) -> None:
        """Log the request's line and record its metrics, exactly once."""
        with self._done:
            if self._finished:
                return
            self._finished = True
        latency_s = time.monotonic() - self.started
        if self.metrics is not None:
            self.metrics.request_done(self.route, self.method, self.status, latency_s)
        if log.isEnabledFor(logging.INFO):
            fields = self.fields(latency_s)
            line = json.dumps(fields, separators=(",", ":")) if self.json_lines else _text(fields)
            log.info(line)

    def fields(self, latency_s: float) -> dict[str, Any]:
        line: dict[str, Any] = {
            "event": "request",
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "tenant": self.tenant,
            "reservation_id": self.reservation_id,
            "estimate": self.estimate,
            "charged": self.charged,
            "outcome": self.outcome,
            "error": self.error,
            "stream": self.stream or None,
            "latency_ms": round(latency_s * 1000, 1),
        }
        return {name: value for name, value in line.items() if value is not None}


def _text(fields: dict[str, Any]) -> str:
    head = f"{fields.pop('method')} {fields.pop('route')} {fields.pop('status')}"
    fields.pop("event")
    return head + "".join(f" {name}={value}" for name, value in fields.items())


def current_trace() -> RequestTrace | None:
    """This request's trace (None outside a request, e.g. in a CLI command)."""
    if not has_request_context():
        return None
    trace: RequestTrace | None = g.get("request_trace")
    return trace


# --- what the budget reports (budget/signals.py) ---------------------------------------


class BudgetNotes:
    """Notes one app's budget signals on the traces of the requests they concern.

    A hold is taken during its request (its trace is the current one then) but may be
    settled later, on the heartbeat's thread when a stream is ended there: so each hold's
    trace is remembered until the hold is gone.
    """

    def __init__(self) -> None:
        self._traces: weakref.WeakKeyDictionary[Hold, RequestTrace] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def subscribe(self, app: Flask) -> None:
        """Hear ``app``'s budget signals, and no other app's."""
        signals.reserved.connect(self.reserved, sender=app)
        signals.refused.connect(self.refused, sender=app)
        signals.settled.connect(self.settled, sender=app)
        signals.released.connect(self.released, sender=app)

    def reserved(self, sender: object, *, hold: Hold) -> None:
        """The guard holds ``hold`` for this request (or serves it unguarded/in shadow mode)."""
        trace = current_trace()
        if trace is None:
            return
        with self._lock:
            self._traces[hold] = trace
        trace.reservation_id = hold.reservation_id
        trace.estimate = hold.estimate

    def refused(
        self, sender: object, *, route: str, tenant: str, estimate: int, error: ApiError
    ) -> None:
        """The reservation was refused (a denial, a rate limit, Cycles failing)."""
        trace = current_trace()
        if trace is None:
            return
        trace.estimate = estimate
        trace.outcome = "denied" if error.status in (402, 429) else "error"

    def settled(self, sender: object, *, hold: Hold, usage: Usage, settlement: Settlement) -> None:
        """``hold``'s call was charged: ``settlement.charged`` for ``usage``."""
        trace = self._trace_of(hold)
        if trace is not None:
            trace.charged = settlement.charged
            trace.outcome = settlement.outcome

    def released(self, sender: object, *, hold: Hold) -> None:
        """``hold`` went back whole: nothing was charged."""
        trace = self._trace_of(hold)
        if trace is not None:
            trace.charged = 0
            trace.outcome = "released"

    def _trace_of(self, hold: Hold) -> RequestTrace | None:
        with self._lock:
            return self._traces.get(hold)


# --- hooks -------------------------------------------------------------------------------


def init_app(app: Flask, metrics: Metrics | None, json_lines: bool) -> None:
    """Give every request an id and a trace, and every response its ``X-Request-ID``."""
    ensure_handler(log)
    notes = app.extensions[EXTENSION] = BudgetNotes()  # kept on the app: blinker holds it weakly
    notes.subscribe(app)

    @app.before_request
    def start_trace() -> None:
        g.request_trace = RequestTrace(
            request_id=request_id_from(request.headers.get(REQUEST_ID_HEADER)),
            method=request.method,
            started=time.monotonic(),
            metrics=metrics,
            json_lines=json_lines,
        )
        # For the guard, which sends it to Cycles (it reads g, as this module reads the
        # caller's g.tenant: neither imports the other).
        g.request_id = g.request_trace.request_id

    @app.after_request
    def end_trace(response: Response) -> Response:
        trace = current_trace()
        if trace is None:  # a before_request hook of another extension answered first
            trace = RequestTrace(request_id_from(None), request.method, time.monotonic())
        response.headers[REQUEST_ID_HEADER] = trace.request_id
        trace.route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        trace.status = response.status_code
        trace.tenant = g.get("tenant")
        if response.status_code >= 400 and response.is_json:
            body = response.get_json(silent=True)
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                trace.error = body["error"]
        if response.is_streamed:
            # The stream runs (and settles) after this hook: log when the server closes it.
            trace.stream = True
            response.call_on_close(trace.finish)
        else:
            trace.finish()
        return response
