"""Request ids and one log line per request.

Every response carries ``X-Request-ID``: the caller's own id when it is a safe value
(:data:`SAFE_REQUEST_ID`), otherwise a new one. The same id travels to Cycles in the
reservation's, commit's and spend event's ``metadata.request_id``, so a charge in the
Cycles ledger can be traced back to the request (and to its log line).

Each request is followed by a :class:`RequestTrace`: the guard and the reservation code
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
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, has_request_context, request

from ..errors import ApiError

if TYPE_CHECKING:
    from ..budget.reservations import Hold, Settlement, Usage
    from .metrics import Metrics

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's id may look like to be kept (and sent on to Cycles and the logs):
# letters, digits and . _ : - only, at most 64 characters. Anything else is replaced.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
LOGGER_NAME = __name__.rsplit(".", 1)[0] + ".requests"
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


def current_request_id() -> str | None:
    trace = current_trace()
    return None if trace is None else trace.request_id


# --- what the guard and the reservation code report -------------------------------------


def reserved(hold: Hold) -> None:
    """The guard holds ``hold`` for this request (or serves it unguarded/in shadow mode)."""
    trace = hold.trace
    if trace is not None:
        trace.reservation_id = hold.reservation_id
        trace.estimate = hold.estimate
        if trace.metrics is not None:
            outcome = hold.mode if hold.mode != "enforce" else "held"
            trace.metrics.reservation(hold.route, outcome, hold.tenant)


def refused(route: str, tenant: str, estimate: int, error: ApiError) -> None:
    """The reservation was refused (a denial, a rate limit, Cycles failing)."""
    trace = current_trace()
    if trace is None:
        return
    trace.estimate = estimate
    trace.outcome = "denied" if error.status in (402, 429) else "error"
    if trace.metrics is not None:
        trace.metrics.reservation(route, trace.outcome, tenant)
        if error.status in (402, 429):
            trace.metrics.denial(error.error, tenant)


def settled(hold: Hold, usage: Usage, settlement: Settlement) -> None:
    """``hold``'s call was charged: ``settlement.charged`` for ``usage``."""
    trace = hold.trace
    if trace is None:
        return
    trace.charged = settlement.charged
    trace.outcome = settlement.outcome
    if trace.metrics is not None:
        trace.metrics.settlement(hold, usage, settlement)


def released(hold: Hold) -> None:
    """``hold`` went back whole: nothing was charged."""
    trace = hold.trace
    if trace is None:
        return
    trace.charged = 0
    trace.outcome = "released"
    if trace.metrics is not None:
        trace.metrics.release(hold)


# --- hooks -------------------------------------------------------------------------------


def init_app(app: Flask, metrics: Metrics | None, json_lines: bool) -> None:
    """Give every request an id and a trace, and every response its ``X-Request-ID``."""
    _ensure_handler()

    @app.before_request
    def start_trace() -> None:
        g.request_trace = RequestTrace(
            request_id=request_id_from(request.headers.get(REQUEST_ID_HEADER)),
            method=request.method,
            started=time.monotonic(),
            metrics=metrics,
            json_lines=json_lines,
        )

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


def _ensure_handler() -> None:
    """Request lines are INFO: print them when nobody configured logging for them."""
    log.setLevel(logging.INFO)
    if logging.getLogger().handlers or log.handlers:
        return  # the deployment (or pytest) decides where log records go
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
