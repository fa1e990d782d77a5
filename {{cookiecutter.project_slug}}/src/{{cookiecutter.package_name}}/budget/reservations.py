"""One reservation per request: reserve the upper bound, then commit the actual cost or release.

Every call here is a bare, public runcycles client call, so a served request costs exactly
two Cycles round trips (reserve, commit), a denied one at most two (the reservation, and
one balance read that tells the 402 what remains: denials.py), and a denial the deny cache
remembers none. A commit that cannot settle at once is kept on disk and retried until
it lands (settler.py), as a spend event (debt where the budget allows) once its hold lapsed.

A :class:`~.holds.Hold` is what the guard keeps for the request while the provider runs.
Nothing here reads the request: what it needs (the request id) is passed in, and what
happened is sent as a budget signal (signals.py) for the request log and metrics to hear. In
shadow mode (``CYCLES_MODE=shadow``) the reservation is a dry run: would-be denials are
logged, the request is served, and the actual cost is recorded in full as a spend event
(as debt where the budget's overdraft allows), so the budget shows what was spent. With
``CYCLES_FAIL_OPEN`` and Cycles unreachable, the request is served unguarded and its cost
is kept as a spend event for when Cycles is back.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
from runcycles import CyclesMetrics, CyclesResponse

from ..config import CYCLES_SAFETY_MARGIN_MS, ConfigError
from ..config_models import model_key
from ..cycles import errors as cycles_errors
from ..cycles.scope_balance import own_balance
from ..errors import ApiError
from ..money import UNIT
from . import denials, signals
from .holds import Hold, Settlement, Usage
from .lost_reserves import LostReserve
from .unsettled import Charge

if TYPE_CHECKING:
    from .service import BudgetService

log = logging.getLogger(__name__)

ACTION_KIND = "llm.completion"
# Cycles limits action names to 256 characters and model_version to 128.
MAX_ACTION_NAME_CHARS = 256
MAX_MODEL_VERSION_CHARS = 128


def reserve(
    budget: BudgetService,
    tenant: str,
    route: str,
    estimate: int,
    *,
    request_id: str | None = None,
    model: str = "",
    user: str = "",
) -> Hold:
    """Hold ``estimate`` for ``tenant``, or raise the ApiError to answer instead (402, ...).

    ``request_id`` names the app request the hold serves (sent to Cycles as metadata);
    ``model`` the model it calls ("": LLM_MODEL), a scope of its own (:func:`subject_body`);
    ``user`` the tenant's end user it is for ("": none), whose budget it must fit too.
    Listeners hear of the hold (``signals.reserved``) or of the refusal (``refused``).
    """
    try:
        if budget.settings.cycles_mode == "shadow":
            hold = _dry_run(budget, tenant, route, estimate, request_id, (model, user))
        else:
            # Never reserve ahead of this tenant's own charges still on their way.
            budget.settler.catch_up(tenant)
            hold = _hold(budget, tenant, route, estimate, request_id, (model, user))
    except ApiError as error:
        signals.refused.send(
            budget.sender, route=route, tenant=tenant, estimate=estimate, error=error
        )
        raise
    signals.reserved.send(budget.sender, hold=hold)
    return hold


def _hold(
    budget: BudgetService,
    tenant: str,
    route: str,
    estimate: int,
    request_id: str | None,
    who: tuple[str, str],
) -> Hold:
    """Enforce mode: a live reservation, or the ApiError that answers instead."""
    # Denials are remembered per tenant, model and end user: one model's (or end user's)
    # spent budget is not another's.
    model, user = who
    denied_key = deny_key(tenant, model, user)
    cached = budget.deny_cache.lookup(denied_key, estimate)
    if cached is not None:
        raise denials.for_estimate(cached, estimate)
    sent_at = time.monotonic()
    try:
        result = _create(budget, tenant, route, estimate, request_id, who, dry_run=False)
    except ApiError as error:
        budget.deny_cache.forget(denied_key)
        if budget.settings.cycles_fail_open and cycles_errors.may_fail_open(error):
            log.warning("Cycles is unavailable; CYCLES_FAIL_OPEN serves %s unguarded", route)
            return Hold(tenant, route, estimate, "unguarded", request_id=request_id)
        if cycles_errors.is_budget_denial(error):
            denied = budget.deny_cache.remember(denied_key, estimate, error)
            # Cycles' denial carries no balances: read them once, after the denial is
            # cached (the tenant's other requests are answered meanwhile); the cache then
            # gives them to the tenant's next denials without a Cycles call.
            explained = denials.explain(budget, tenant, denied)
            budget.deny_cache.add_details(denied_key, explained)
            raise denials.for_estimate(explained, estimate) from None
        raise
    budget.deny_cache.forget(denied_key)
    reservation_id = result.get("reservation_id")
    if result.get("decision") == "DENY" or not isinstance(reservation_id, str):
        # A live denial is a 409 (above); a 200 without a reservation is a broken answer.
        raise cycles_errors.classify(-1, None, None)
    expires_at = sent_at + _ttl_ms(budget, result) / 1000
    if expires_at - time.monotonic() <= budget.call_budget_s() + CYCLES_SAFETY_MARGIN_MS / 1000:
        # Too little time left to call the provider and still commit under the hold (the
        # server shortened the TTL): answer 503 rather than charge for a call never made.
        log.warning("Cycles hold %s is too short to use; releasing it", reservation_id)
        lost = LostReserve(tenant, {}, expires_at, reservation_id=reservation_id)
        budget.lost_reserves.add(lost)
        raise cycles_errors.classify(-1, None, None)
    return Hold(
        tenant,
        route,
        estimate,
        "enforce",
        reservation_id=reservation_id,
        max_tokens_cap=_max_tokens_cap(result),
        expires_at=expires_at,
        request_id=request_id,
        balance=own_balance(budget.settings, tenant, result.get("balances")),
        model=model,
        user=user,
    )


def _ttl_ms(budget: BudgetService, result: dict[str, Any]) -> int:
    """The hold's time to live as Cycles answered it (the TTL asked for, if it did not)."""
    remaining = cycles_errors.non_negative_int(result.get("remaining_ttl_ms"))
    return budget.settings.cycles_reservation_ttl_ms if remaining is None else remaining


def _dry_run(
    budget: BudgetService,
    tenant: str,
    route: str,
    estimate: int,
    request_id: str | None,
    who: tuple[str, str],
) -> Hold:
    """Shadow mode: evaluate the same reservation without holding anything; never deny."""
    model, user = who
    try:
        result = _create(budget, tenant, route, estimate, request_id, who, dry_run=True)
    except ApiError as error:
        if cycles_errors.is_budget_denial(error):
            _log_would_be_denial(tenant, route, estimate, error.error)
        else:
            log.warning("CYCLES_MODE=shadow: Cycles could not evaluate %s (%s)", route, error.error)
        return Hold(
            tenant, route, estimate, "shadow", request_id=request_id, model=model, user=user
        )
    if result.get("decision") == "DENY":
        reason = cycles_errors.denial(_text(result.get("reason_code")), None).error
        _log_would_be_denial(tenant, route, estimate, reason)
    # Caps are not applied either: shadow mode changes nothing the caller sees.
    balance = own_balance(budget.settings, tenant, result.get("balances"))
    return Hold(
        tenant,
        route,
        estimate,
        "shadow",
        request_id=request_id,
        balance=balance,
        model=model,
        user=user,
    )


def _create(
    budget: BudgetService,
    tenant: str,
    route: str,
    estimate: int,
    request_id: str | None,
    who: tuple[str, str],
    *,
    dry_run: bool,
) -> dict[str, Any]:
    model, user = who
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": subject_body(budget, tenant, model, user),
        "action": action_body(budget, model),
        "estimate": {"unit": UNIT, "amount": estimate},
        "ttl_ms": budget.settings.cycles_reservation_ttl_ms,
        "metadata": {"route": route, **({"request_id": request_id} if request_id else {})},
    }
    if dry_run:
        body["dry_run"] = True
    sent_at = time.monotonic()
    response = budget.cycles.client_for(tenant).create_reservation(body)
    if not dry_run and _may_have_created(response):
        # Cycles may hold the budget although no usable answer came back: find and
        # release that hold in the background (lost_reserves.py).
        lapses_at = sent_at + body["ttl_ms"] / 1000
        budget.lost_reserves.add(LostReserve(tenant, body, lapses_at))
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


def settle(budget: BudgetService, hold: Hold, cost: int, usage: Usage) -> Settlement | None:
    """Charge ``cost`` for ``hold``'s call; None if the hold was settled already."""
    if not hold.claim_settlement():
        return None
    budget.keeper.forget(hold)
    charge = charge_for(budget, hold, cost, usage)
    held = hold.held
    settlement = _commit(budget, hold, charge) if held else _record_event(budget, hold, charge)
    if hold.streaming_on_disk:
        # Charged, or kept as an unsettled charge under the same key: nothing to recover.
        budget.settler.store.stream_ended(charge.reservation_id or "")
    signals.settled.send(budget.sender, hold=hold, usage=usage, settlement=settlement)
    return settlement


def record_stream(budget: BudgetService, hold: Hold, cost: int, usage: Usage) -> None:
    """Keep on disk what ``hold``'s live stream owes so far: if this process dies, the app
    that finds the record charges it (settler.py). Settling the hold removes it."""
    if not hold.held or hold.settled:
        return
    try:
        budget.settler.store.stream(charge_for(budget, hold, cost, usage))
    except ConfigError as error:
        # The stream goes on and is charged as usual; only a crash of this process would
        # now leave it uncharged (and new reservations are refused until the folder works).
        log.error("Tenant %s: stream not recorded on disk: %s", hold.tenant, error.message)
        return
    hold.streaming_on_disk = True


def release(budget: BudgetService, hold: Hold, reason: str) -> None:
    """Give the whole hold back: the call produced nothing billable."""
    if not hold.claim_settlement():
        return
    budget.keeper.forget(hold)
    signals.released.send(budget.sender, hold=hold)
    if hold.streaming_on_disk and hold.reservation_id is not None:
        budget.settler.store.stream_ended(hold.reservation_id)
    if not hold.held:
        return
    assert hold.reservation_id is not None
    body = {"idempotency_key": str(uuid.uuid4()), "reason": reason[:256]}
    response = budget.cycles.client_for(hold.tenant).release_reservation(hold.reservation_id, body)
    if not response.is_success:
        # The hold expires by itself at its TTL; nothing was spent, so nothing is lost.
        log.warning(
            "Cycles release of %s failed (HTTP %s %s); it lapses at its TTL",
            hold.reservation_id,
            response.status,
            cycles_errors.error_code(response),
        )


def action_body(budget: BudgetService, model: str = "") -> dict[str, str]:
    name = model or budget.settings.llm_model
    return {"kind": ACTION_KIND, "name": name[:MAX_ACTION_NAME_CHARS]}


def subject_body(
    budget: BudgetService, tenant: str, model: str = "", user: str = ""
) -> dict[str, str]:
    """``tenant``'s subject (tenancy.py), with the model's level below it when the app
    serves more than one model (LLM_MODELS), and the end user's (``agent``) below that.

    Cycles budgets are keyed by scope alone (an action name selects no budget), so the
    model is the ``workflow`` level: a budget at ``<tenant's scope>/app:<app>/workflow:
    <model key>`` caps the tenant's spend on that model, and a model without one is
    skipped (Cycles checks only the scopes that have a budget). Cycles reads caps from the
    deepest scope of a subject only, so a one-model app keeps its subject (and where its
    caps live) as it was. An end user's budget (budget/end_users.py) is the deepest scope
    of its calls, so Cycles reads their caps there.
    """
    subject = dict(budget.cycles.subject_body(tenant))
    if len(budget.settings.llm_models) > 1:
        subject["workflow"] = model_key(model or budget.settings.llm_model)
    if user:
        subject["agent"] = user
    return subject


def deny_key(tenant: str, model: str, user: str = "") -> str:
    """What the deny cache keeps a denial under: the tenant, the model and the end user."""
    return "/".join((tenant, model, user)) if model or user else tenant


# --- settling --------------------------------------------------------------------------


def charge_for(budget: BudgetService, hold: Hold, cost: int, usage: Usage) -> Charge:
    """What ``hold``'s call owes, as the settler sends it (and the store keeps it)."""
    key = hold.charge_key
    event = _event_body(budget, hold, cost, usage, key, hold.reservation_id)
    if not hold.held:
        return Charge(key, hold.tenant, cost, None, 0, "event", None, event, attempts=0)
    commit: dict[str, Any] = {
        "idempotency_key": key,
        "actual": {"unit": UNIT, "amount": cost},
        "metrics": _metrics(usage),
        **({"metadata": hold.request_metadata()} if hold.request_id else {}),
    }
    # Until then the hold itself holds the amount: the charge cannot be spent twice.
    covered_until_ms = budget.settler.clock() + int((hold.expires_at - time.monotonic()) * 1000)
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


def _commit(budget: BudgetService, hold: Hold, charge: Charge) -> Settlement:
    landed, stage = budget.settler.settle(charge)
    late = stage != "commit"  # the hold lapsed before the commit reached Cycles
    if landed is None:
        return Settlement("late" if late else "pending", charge.amount)
    if landed.outcome == "late":
        return Settlement("late", landed.charged)
    return Settlement("committed", landed.charged)


def _record_event(budget: BudgetService, hold: Hold, charge: Charge) -> Settlement:
    """Shadow or unguarded calls hold nothing: their cost is recorded as a spend event,
    in full (as debt where the budget's overdraft allows; see settler.py)."""
    if hold.mode == "shadow":
        landed, _ = budget.settler.settle(charge)
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
    budget.settler.keep(charge)
    return Settlement("pending", charge.amount)


def _event_body(
    budget: BudgetService,
    hold: Hold,
    amount: int,
    usage: Usage,
    idempotency_key: str,
    reservation_id: str | None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"route": hold.route, "mode": hold.mode}
    metadata.update(hold.request_metadata())
    if reservation_id is not None:
        metadata["reservation_id"] = reservation_id
    return {
        "idempotency_key": idempotency_key,
        "subject": subject_body(budget, hold.tenant, hold.model, hold.user),
        "action": action_body(budget, hold.model),
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
