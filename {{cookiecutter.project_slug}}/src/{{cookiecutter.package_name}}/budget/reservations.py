"""One reservation per request: reserve the upper bound, then commit the actual cost or release.

Every call here is a bare, public runcycles client call, so a served request costs exactly
two Cycles round trips (reserve, commit), a denied one at most one, and a denial the deny
cache remembers none. A commit that cannot settle at once is kept on disk and retried until
it lands (settler.py), as a spend event (debt where the budget allows) once its hold lapsed.

A :class:`Hold` is what the guard keeps for the request while the provider runs. In
shadow mode (``CYCLES_MODE=shadow``) the reservation is a dry run: would-be denials are
logged, the request is served, and the actual cost is recorded in full as a spend event
(as debt where the budget's overdraft allows), so the budget shows what was spent. With
``CYCLES_FAIL_OPEN`` and Cycles unreachable, the request is served unguarded and its cost
is kept as a spend event for when Cycles is back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
from runcycles import CyclesMetrics, CyclesResponse

from ..config import CYCLES_SAFETY_MARGIN_MS, ConfigError
from ..cycles import errors as cycles_errors
from ..errors import ApiError
from ..observability import request_log
from .lost_reserves import LostReserve
from .pricing import UNIT
from .unsettled import Charge

if TYPE_CHECKING:
    from ..cycles.clients import CyclesClients

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
    # The idempotency key of this hold's charge: its commit, its spend event if the hold
    # lapsed, and its stream record (unsettled.py), so a charge never lands twice.
    charge_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    streaming_on_disk: bool = False  # a stream record says what this stream owes so far
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
    expires_at = sent_at + ttl_ms / 1000
    if expires_at - time.monotonic() <= cycles.call_budget_s() + CYCLES_SAFETY_MARGIN_MS / 1000:
        # Too little time left to call the provider and still commit under the hold (the
        # server shortened the TTL): answer 503 rather than charge for a call never made.
        log.warning("Cycles hold %s is too short to use; releasing it", reservation_id)
        lost = LostReserve(tenant, {}, expires_at, reservation_id=reservation_id)
        cycles.lost_reserves.add(lost)
        raise cycles_errors.classify(-1, None, None)
    return Hold(
        tenant,
        route,
        estimate,
        "enforce",
        reservation_id=reservation_id,
        max_tokens_cap=_max_tokens_cap(result),
        expires_at=expires_at,
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
    sent_at = time.monotonic()
    response = cycles.client_for(tenant).create_reservation(body)
    if not dry_run and _may_have_created(response):
        # Cycles may hold the budget although no usable answer came back: find and
        # release that hold in the background (lost_reserves.py).
        lapses_at = sent_at + body["ttl_ms"] / 1000
        cycles.lost_reserves.add(LostReserve(tenant, body, lapses_at))
    return _reservation_result(response)


# Transport failures before the request could leave: Cycles never saw it.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _may_have_created(response: CyclesResponse) -> bool:
    """Whether a create that gave no usable reservation may still have made one: no answer
    once connected (lost, cut off, late), a 2xx that does not parse, a 5xx that is not a
    Cycles error (a gateway's timeout). A Cycles error answer is the server's verdict
    (denied, invalid, failed): nothing was held."""
    if response.is_success:
        body = response.body if isinstance(response.body, dict) else {}
        return not isinstance(body.get("reservation_id"), str) and "decision" not in body
    if response.transport_exception is not None:
        # Without a connection (Cycles down) the request never left: nothing can be held.
        return not isinstance(response.transport_exception, NEVER_SENT)
    code = cycles_errors.error_code(response)
    return cycles_errors.is_unavailable(response.status) and code is None


def recover_lost_reserve(cycles: CyclesClients, lost: LostReserve) -> bool:
    """One attempt to release a hold whose reserve answer was lost (lost_reserves.py);
    True once nothing is held any more."""
    client = cycles.client_for(lost.tenant)
    if lost.reservation_id is None:
        # The same key and body: Cycles answers with the original reservation (or makes it
        # now, if the first attempt never arrived; it is released just the same).
        replay = client.create_reservation(lost.create_body)
        if not replay.is_success:
            # A 4xx is a verdict (denied, invalid): nothing was held. No answer, a 5xx, a
            # rejected key or a rate limit say nothing yet: try again.
            status = replay.status
            return not (cycles_errors.is_unavailable(status) or status in (401, 403, 408, 429))
        body = replay.body if isinstance(replay.body, dict) else {}
        reservation_id = body.get("reservation_id")
        if not isinstance(reservation_id, str):
            return "decision" in body  # a well-formed answer without a hold: nothing held
        lost.reservation_id = reservation_id
    body = {"idempotency_key": lost.release_key, "reason": "reserve_answer_lost"}
    response = client.release_reservation(lost.reservation_id, body)
    if response.is_success or response.status in (404, 409, 410):
        # Released now, or finalized, expired or unknown: either way nothing is held.
        log.info("Released Cycles hold %s (its reserve answer was lost)", lost.reservation_id)
        return True
    return False


def settle(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> Settlement | None:
    """Charge ``cost`` for ``hold``'s call; None if the hold was settled already."""
    if not hold.claim_settlement():
        return None
    cycles.keeper.forget(hold)
    charge = charge_for(cycles, hold, cost, usage)
    held = hold.held
    settlement = _commit(cycles, hold, charge) if held else _record_event(cycles, hold, charge)
    if hold.streaming_on_disk:
        # Charged, or kept as an unsettled charge under the same key: nothing to recover.
        cycles.settler.store.stream_ended(charge.reservation_id or "")
    request_log.settled(hold, usage, settlement)
    return settlement


def record_stream(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> None:
    """Keep on disk what ``hold``'s live stream owes so far: if this process dies, the app
    that finds the record charges it (settler.py). Settling the hold removes it."""
    if not hold.held or hold.settled:
        return
    try:
        cycles.settler.store.stream(charge_for(cycles, hold, cost, usage))
    except ConfigError as error:
        # The stream goes on and is charged as usual; only a crash of this process would
        # now leave it uncharged (and new reservations are refused until the folder works).
        log.error("Tenant %s: stream not recorded on disk: %s", hold.tenant, error.message)
        return
    hold.streaming_on_disk = True


def release(cycles: CyclesClients, hold: Hold, reason: str) -> None:
    """Give the whole hold back: the call produced nothing billable."""
    if not hold.claim_settlement():
        return
    cycles.keeper.forget(hold)
    request_log.released(hold)
    if hold.streaming_on_disk and hold.reservation_id is not None:
        cycles.settler.store.stream_ended(hold.reservation_id)
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


def charge_for(cycles: CyclesClients, hold: Hold, cost: int, usage: Usage) -> Charge:
    """What ``hold``'s call owes, as the settler sends it (and the store keeps it)."""
    key = hold.charge_key
    event = _event_body(cycles, hold, cost, usage, key, hold.reservation_id)
    if not hold.held:
        return Charge(key, hold.tenant, cost, None, 0, "event", None, event, attempts=0)
    commit: dict[str, Any] = {
        "idempotency_key": key,
        "actual": {"unit": UNIT, "amount": cost},
        "metrics": _metrics(usage),
        **({"metadata": _request_metadata(hold.trace)} if hold.trace else {}),
    }
    # Until then the hold itself holds the amount: the charge cannot be spent twice.
    covered_until_ms = cycles.settler.clock() + int((hold.expires_at - time.monotonic()) * 1000)
    return Charge(
        key=key,
        tenant=hold.tenant,
        amount=cost,
        reservation_id=hold.reservation_id,
        covered_until_ms=max(0, covered_until_ms),
        stage="commit",
        commit_body=commit,
        event_body=event,
        attempts=0,
    )


def _commit(cycles: CyclesClients, hold: Hold, charge: Charge) -> Settlement:
    landed, stage = cycles.settler.settle(charge)
    late = stage != "commit"  # the hold lapsed before the commit reached Cycles
    if landed is None:
        return Settlement("late" if late else "pending", charge.amount)
    if landed.outcome == "late":
        return Settlement("late", landed.charged)
    return Settlement("committed", landed.charged)


def _record_event(cycles: CyclesClients, hold: Hold, charge: Charge) -> Settlement:
    """Shadow or unguarded calls hold nothing: their cost is recorded as a spend event,
    in full (as debt where the budget's overdraft allows; see settler.py)."""
    if hold.mode == "shadow":
        landed, _ = cycles.settler.settle(charge)
        if landed is None:
            return Settlement("pending", charge.amount)
        if landed.uncharged:
            log.warning(
                "CYCLES_MODE=shadow: tenant %s spent %s USD microcents on %s; the budget "
                "recorded %s (give it an overdraft limit to record all of it)",
                hold.tenant,
                charge.amount,
                hold.route,
                landed.charged,
            )
        return Settlement("event", landed.charged)
    # Unguarded: Cycles was unreachable a moment ago; keep the event rather than wait.
    cycles.settler.keep(charge)
    return Settlement("pending", charge.amount)


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
