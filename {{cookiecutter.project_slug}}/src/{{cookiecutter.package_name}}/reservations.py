"""One reservation per request: reserve the upper bound, then commit the actual cost or release.

Every call here is a bare, public runcycles client call, so a served request costs exactly
two Cycles round trips (reserve, commit), a denied one at most one, and a denial the deny
cache remembers none. A commit that cannot settle at once is handed to runcycles' own
retry machinery (see runcycles_compat.py), which journals it and falls back to a spend
event when the reservation has expired meanwhile.

A :class:`Hold` is what the guard keeps for the request while the provider runs. In
shadow mode (``CYCLES_MODE=shadow``) the reservation is a dry run: would-be denials are
logged, the request is served, and the actual cost is recorded as a spend event so the
budget still moves. With ``CYCLES_FAIL_OPEN`` and Cycles unreachable, the request is served
unguarded and its cost is queued as a spend event for when Cycles is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from runcycles import CyclesMetrics, CyclesResponse

from . import cycles_errors, request_log
from .errors import ApiError
from .pricing import UNIT

if TYPE_CHECKING:
    from .cycles_clients import CyclesClients

log = logging.getLogger(__name__)

ACTION_KIND = "llm.completion"
# Cycles limits action names to 256 characters and model_version to 128.
MAX_ACTION_NAME_CHARS = 256
MAX_MODEL_VERSION_CHARS = 128

HoldMode = Literal["enforce", "shadow", "unguarded"]
Outcome = Literal["committed", "late", "pending", "event", "released"]


@dataclass(eq=False)
class Hold:
    """The budget held for one request while its provider call runs."""

    tenant: str
    route: str
    estimate: int
    mode: HoldMode
    reservation_id: str | None = None  # None: nothing is held (shadow, unguarded)
    max_tokens_cap: int | None = None  # Cycles ALLOW_WITH_CAPS: the most output allowed
    # When the hold lapses, on this process' monotonic clock (measured from before the
    # reserve call was sent, so never later than the server's own expiry).
    expires_at: float = math.inf
    extensions: int = 0
    extendable: bool = True  # False once Cycles refused an extension for good
    settled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The request this hold serves (its id goes to Cycles; its log line notes the charge).
    trace: request_log.RequestTrace | None = field(
        default_factory=request_log.current_trace, repr=False
    )

    @property
    def held(self) -> bool:
        return self.reservation_id is not None

    def claim_settlement(self) -> bool:
        """True exactly once: the caller that gets it commits or releases the hold."""
        with self._lock:
            if self.settled:
                return False
            self.settled = True
            return True


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    charged: int  # USD microcents the ledger took (or will take, once a retry lands)


@dataclass(frozen=True)
class Usage:
    """What a finished (or cut-short) call is billed on."""

    input_tokens: int
    output_tokens: int
    model: str
    latency_ms: int


def reserve(cycles: CyclesClients, tenant: str, route: str, estimate: int) -> Hold:
    """Hold ``estimate`` for ``tenant``, or raise the ApiError to answer instead (402, ...)."""
    if cycles.settings.cycles_mode == "shadow":
        return _dry_run(cycles, tenant, route, estimate)
    cached = cycles.deny_cache.lookup(tenant, estimate)
    if cached is not None:
        raise cached
    sent_at = time.monotonic()
    try:
        result = _create(cycles, tenant, route, estimate, dry_run=False)
    except ApiError as error:
        cycles.deny_cache.forget(tenant)
        if cycles.settings.cycles_fail_open and cycles_errors.may_fail_open(error):
            log.warning("Cycles is unavailable; CYCLES_FAIL_OPEN serves %s unguarded", route)
            return Hold(tenant, route, estimate, "unguarded")
        if cycles_errors.is_budget_denial(error):
            raise cycles.deny_cache.remember(tenant, estimate, error) from None
        raise
    reservation_id = result.get("reservation_id")
    if result.get("decision") == "DENY" or not isinstance(reservation_id, str):
        # A live denial is a 409 (above); a 200 without a reservation is a broken answer.
        cycles.deny_cache.forget(tenant)
        raise cycles_errors.classify(-1, None, None)
    cycles.deny_cache.forget(tenant)
    remaining = cycles_errors.non_negative_int(result.get("remaining_ttl_ms"))
    ttl_ms = cycles.settings.cycles_reservation_ttl_ms if remaining is None else remaining
    return Hold(
        tenant,
        route,
        estimate,
        "enforce",
        reservation_id=reservation_id,
        max_tokens_cap=_max_tokens_cap(result),
        expires_at=sent_at + ttl_ms / 1000,
    )


def _dry_run(cycles: CyclesClients, tenant: str, route: str, estimate: int) -> Hold:
    """Shadow mode: evaluate the same reservation without holding anything; never deny."""
    try:
        result = _create(cycles, tenant, route, estimate, dry_run=True)
    except ApiError as error:
        if cycles_errors.is_budget_denial(error):
            _log_would_be_denial(tenant, route, estimate, error.error)
        else:
            log.warning("CYCLES_MODE=shadow: Cycles could not evaluate %s (%s)", route, error.error)
        return Hold(tenant, route, estimate, "shadow")
    if result.get("decision") == "DENY":
        reason = cycles_errors.denial(_text(result.get("reason_code")), None).error
        _log_would_be_denial(tenant, route, estimate, reason)
    # Caps are not applied either: shadow mode changes nothing the caller sees.
    return Hold(tenant, route, estimate, "shadow")


def _create(
    cycles: CyclesClients, tenant: str, route: str, estimate: int, *, dry_run: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": cycles.subject_body(tenant),
        "action": action_body(cycles),
        "estimate": {"unit": UNIT, "amount": estimate},
        "ttl_ms": cycles.settings.cycles_reservation_ttl_ms,
        "metadata": {"route": route, **_request_metadata(request_log.current_trace())},
    }
    if dry_run:
        body["dry_run"] = True
    return _reservation_result(cycles.client_for(tenant).create_reservation(body))


def settle(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> Settlement | None:
    """Charge ``cost`` for ``hold``'s call; None if the hold was settled already."""
    if not hold.claim_settlement():
        return None
    cycles.keeper.forget(hold)
    if hold.held:
        settlement = _commit(cycles, hold, cost, usage)
    else:
        settlement = _record_event(cycles, hold, cost, usage)
    request_log.settled(hold, usage, settlement)
    return settlement


def release(cycles: CyclesClients, hold: Hold, reason: str) -> None:
    """Give the whole hold back: the call produced nothing billable."""
    if not hold.claim_settlement():
        return
    cycles.keeper.forget(hold)
    request_log.released(hold)
    if not hold.held:
        return
    assert hold.reservation_id is not None
    body = {"idempotency_key": str(uuid.uuid4()), "reason": reason[:256]}
    response = cycles.client_for(hold.tenant).release_reservation(hold.reservation_id, body)
    if not response.is_success:
        # The hold expires by itself at its TTL; nothing was spent, so nothing is lost.
        log.warning(
            "Cycles release of %s failed (HTTP %s %s); it lapses at its TTL",
            hold.reservation_id,
            response.status,
            cycles_errors.error_code(response),
        )


# Extension failures that can never succeed later: the heartbeat stops trying.
PERMANENT_EXTEND_FAILURES = frozenset(
    {
        "RESERVATION_EXPIRED",
        "RESERVATION_FINALIZED",
        "MAX_EXTENSIONS_EXCEEDED",
        "NOT_FOUND",
        "TENANT_CLOSED",
    }
)


def extend(cycles: CyclesClients, hold: Hold) -> bool:
    """Push ``hold``'s expiry out by one TTL; True when Cycles took the extension."""
    if not hold.held or hold.settled:
        return False
    assert hold.reservation_id is not None
    ttl_ms = cycles.settings.cycles_reservation_ttl_ms
    body = {"idempotency_key": str(uuid.uuid4()), "extend_by_ms": ttl_ms}
    sent_at = time.monotonic()
    response = cycles.client_for(hold.tenant).extend_reservation(hold.reservation_id, body)
    result = response.body if isinstance(response.body, dict) else {}
    if response.is_success and result.get("status") == "ACTIVE":
        remaining = cycles_errors.non_negative_int(result.get("remaining_ttl_ms"))
        # Without the server's remaining time, assume the extension added exactly one TTL.
        hold.expires_at = (
            hold.expires_at + ttl_ms / 1000 if remaining is None else sent_at + remaining / 1000
        )
        hold.extensions += 1
        return True
    code = cycles_errors.error_code(response)
    if response.status == 410 or code in PERMANENT_EXTEND_FAILURES:
        hold.extendable = False
    if hold.settled:
        return False  # committed while the extension was on its way: nothing to keep
    log.warning(
        "Cycles extension of %s failed (HTTP %s %s)%s",
        hold.reservation_id,
        response.status,
        code,
        "" if hold.extendable else "; the stream ends before its hold lapses",
    )
    return False


def action_body(cycles: CyclesClients) -> dict[str, str]:
    return {"kind": ACTION_KIND, "name": cycles.settings.llm_model[:MAX_ACTION_NAME_CHARS]}


# --- settling --------------------------------------------------------------------------


def _commit(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> Settlement:
    assert hold.reservation_id is not None
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "actual": {"unit": UNIT, "amount": cost},
        "metrics": _metrics(usage),
        **({"metadata": _request_metadata(hold.trace)} if hold.trace else {}),
    }
    client = cycles.client_for(hold.tenant)
    response = client.commit_reservation(hold.reservation_id, body)
    event = _event_body(cycles, hold, cost, usage, body["idempotency_key"], hold.reservation_id)
    if response.is_success:
        charged = _charged(response.body, cost)
        if charged < cost:
            # The provider used more than max_tokens allowed for: charge the rest as debt.
            _charge_shortfall(cycles, hold, cost - charged, usage)
        return Settlement("committed", cost)
    code = cycles_errors.error_code(response)
    if response.status == 410 or code == "RESERVATION_EXPIRED":
        return _charge_after_expiry(cycles, hold, cost, event)
    if code in ("RESERVATION_FINALIZED", "IDEMPOTENCY_MISMATCH"):
        log.error("Cycles refused the commit of %s: %s", hold.reservation_id, code)
        return Settlement("committed", 0)
    # No answer, a 5xx, a rate limit, a rejected key: the spend happened, so it must land.
    log.warning(
        "Cycles commit of %s did not settle (HTTP %s %s); retrying in the background",
        hold.reservation_id,
        response.status,
        code,
    )
    cycles.retry_for(hold.tenant).commit_later(
        hold.reservation_id, body, event, response.retry_after_ms_header
    )
    return Settlement("pending", cost)


def _charge_after_expiry(
    cycles: CyclesClients, hold: Hold, cost: int, event: dict[str, Any]
) -> Settlement:
    """The hold lapsed before the commit: record the spend as an event, as debt if allowed."""
    log.error(
        "Cycles reservation %s of tenant %s expired before its commit; recording %s as spend",
        hold.reservation_id,
        hold.tenant,
        cost,
    )
    charged = _post_event(cycles, hold, {**event, "overage_policy": "ALLOW_WITH_OVERDRAFT"})
    if charged is None:
        # Past the overdraft limit (or none is set): take what remains and log the rest.
        fallback = {**event, "idempotency_key": str(uuid.uuid4())}
        charged = _post_event(cycles, hold, {**fallback, "overage_policy": "ALLOW_IF_AVAILABLE"})
    if charged is not None and charged < cost:
        log.error(
            "Tenant %s: %s USD microcents of expired reservation %s could not be charged",
            hold.tenant,
            cost - charged,
            hold.reservation_id,
        )
    return Settlement("late", cost if charged is None else charged)


def _charge_shortfall(cycles: CyclesClients, hold: Hold, shortfall: int, usage: Usage) -> None:
    log.warning(
        "Tenant %s: the provider reported more usage than reservation %s allowed for; "
        "charging the %s USD microcents over the estimate as debt",
        hold.tenant,
        hold.reservation_id,
        shortfall,
    )
    event = _event_body(cycles, hold, shortfall, usage, str(uuid.uuid4()), hold.reservation_id)
    if _post_event(cycles, hold, {**event, "overage_policy": "ALLOW_WITH_OVERDRAFT"}) is None:
        log.error(
            "Tenant %s: %s USD microcents over reservation %s could not be charged "
            "(no overdraft allowed)",
            hold.tenant,
            shortfall,
            hold.reservation_id,
        )


def _record_event(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> Settlement:
    """Shadow or unguarded calls hold nothing: their cost is recorded as a spend event."""
    key = str(uuid.uuid4())
    event = _event_body(cycles, hold, cost, usage, key, None)
    if hold.mode == "shadow":
        charged = _post_event(cycles, hold, event, retry_reference=f"shadow-{key}")
        return Settlement("event", cost if charged is None else charged)
    # Unguarded: Cycles was unreachable a moment ago; queue the event rather than wait.
    cycles.retry_for(hold.tenant).event_later(f"unguarded-{key}", event)
    return Settlement("pending", cost)


def _post_event(
    cycles: CyclesClients,
    hold: Hold,
    event: dict[str, Any],
    retry_reference: str | None = None,
) -> int | None:
    """POST one spend event; the amount charged, or None if Cycles refused it."""
    response = cycles.client_for(hold.tenant).create_event(event)
    if response.is_success:
        return _charged(response.body, event["actual"]["amount"])
    code = cycles_errors.error_code(response)
    if response.is_client_error and response.status not in (401, 403, 429):
        log.warning("Cycles refused a spend event for %s: %s", hold.tenant, code)
        return None
    log.warning("Cycles spend event for %s did not land (HTTP %s)", hold.tenant, response.status)
    cycles.retry_for(hold.tenant).event_later(retry_reference or event["idempotency_key"], event)
    return event["actual"]["amount"]  # type: ignore[no-any-return]


def _event_body(
    cycles: CyclesClients,
    hold: Hold,
    amount: int,
    usage: Usage,
    idempotency_key: str,
    reservation_id: str | None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"route": hold.route, "mode": hold.mode}
    metadata.update(_request_metadata(hold.trace))
    if reservation_id is not None:
        metadata["reservation_id"] = reservation_id
    return {
        "idempotency_key": idempotency_key,
        "subject": cycles.subject_body(hold.tenant),
        "action": action_body(cycles),
        "actual": {"unit": UNIT, "amount": amount},
        "metrics": _metrics(usage),
        "metadata": metadata,
    }


def _metrics(usage: Usage) -> dict[str, Any]:
    # Validated through runcycles' own model, so a bad value fails here, not at Cycles.
    metrics = CyclesMetrics(
        tokens_input=usage.input_tokens,
        tokens_output=usage.output_tokens,
        latency_ms=max(0, usage.latency_ms),
        model_version=usage.model[:MAX_MODEL_VERSION_CHARS] or None,
    )
    return metrics.model_dump(exclude_none=True)


# --- reading answers -------------------------------------------------------------------


def _reservation_result(response: CyclesResponse) -> dict[str, Any]:
    """The 200 body of a reservation, or raise the ApiError that answers its failure."""
    body = response.body if isinstance(response.body, dict) else None
    if response.is_success and body is not None and "decision" in body:
        return body
    raise cycles_errors.from_response(response, "reserve")


def _max_tokens_cap(result: dict[str, Any]) -> int | None:
    caps = result.get("caps")
    value = caps.get("max_tokens") if isinstance(caps, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _charged(body: object, default: int) -> int:
    charged = body.get("charged") if isinstance(body, dict) else None
    amount = charged.get("amount") if isinstance(charged, dict) else None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else default


def _request_metadata(trace: request_log.RequestTrace | None) -> dict[str, str]:
    """Ties a Cycles record to the app request (X-Request-ID) that caused it."""
    return {} if trace is None else {"request_id": trace.request_id}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _log_would_be_denial(tenant: str, route: str, estimate: int, reason: str) -> None:
    log.warning(
        "CYCLES_MODE=shadow: would deny tenant %s on %s for %s USD microcents (%s); serving",
        tenant,
        route,
        estimate,
        reason,
    )
