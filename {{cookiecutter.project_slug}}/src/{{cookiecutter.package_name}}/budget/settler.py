"""Every charge lands in the ledger: retried until Cycles takes it, across restarts.

A charge (a commit, or a spend event) is first sent on the request's own thread. If Cycles
gives no usable answer it goes to the store (unsettled.py) and this app's settler thread
tries it again, with backoff up to ``MAX_BACKOFF_MS`` and no limit on attempts, until it
lands or Cycles refuses it for good. The store is a file, so a restart (or another worker
of the host) picks up where this process stopped.

How a charge lands (:func:`land`):

1. ``commit`` its reservation. A commit whose hold has lapsed (410 ``RESERVATION_EXPIRED``)
   becomes a spend event:
2. ``event`` with ``overage_policy=ALLOW_WITH_OVERDRAFT``, so the whole amount is recorded,
   as debt where the budget has room in its overdraft limit. Refused for lack of room:
3. ``available``: a spend event with ``ALLOW_IF_AVAILABLE`` takes what the budget has left;
   the rest is logged and counted (``cycles_uncharged_usd_microcents_total``).

A tenant's new reservations never run ahead of its own unsettled charges
(:meth:`Settler.catch_up`, called before each reservation): charges still covered by their
own live hold are harmless (the hold holds the amount); any other is tried at once, and while
one is left the tenant is answered 503 (``Retry-After``: the next attempt) instead of being
served from budget those charges will take. The store is per host, so across hosts the
overspend is bounded by what other hosts have unsettled (see the README).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from runcycles import CyclesClient, CyclesResponse

from ..cycles import errors as cycles_errors
from ..errors import ApiError
from .unsettled import Charge, Stage, UnsettledStore, now_ms

log = logging.getLogger(__name__)

# The first retry comes this soon; each further one waits twice as long, up to the store's
# MAX_BACKOFF_MS.
FIRST_BACKOFF_MS = 500
# With nothing due, look at the store this often anyway: charges and streams other
# processes left behind (a worker that died) are found within this time.
IDLE_POLL_S = 30.0
# A charge of a tenant the settings no longer name waits this long between attempts.
UNKNOWN_TENANT_RETRY_MS = 3_600_000
# Commit answers after which the reservation is settled already: nothing more to charge.
_ALREADY_SETTLED = frozenset({"RESERVATION_FINALIZED", "IDEMPOTENCY_MISMATCH"})
# Event refusals that mean "no overdraft room": record what the budget has left instead.
_NO_ROOM = frozenset({"OVERDRAFT_LIMIT_EXCEEDED", "BUDGET_EXCEEDED"})

Outcome = Literal["committed", "late", "event", "settled_before", "refused"]


@dataclass(frozen=True)
class Landed:
    """A charge Cycles answered for good."""

    outcome: Outcome
    charged: int  # what the ledger took
    uncharged: int  # what it could not take (no overdraft room): logged and counted


Reporter = Callable[[str, str, int], None]  # (tenant, what happened, uncharged microcents)


def _no_report(tenant: str, outcome: str, uncharged: int) -> None:
    return None


class Settler:
    """The app's unsettled charges: first attempts, retries, and the guard's catch-up."""

    def __init__(
        self,
        store: UnsettledStore,
        client_for: Callable[[str], CyclesClient],
        *,
        fail_open: bool = False,
        background: bool = True,
        on_start: Callable[[], None] | None = None,
        report: Reporter = _no_report,
    ) -> None:
        """``on_start()`` runs once, before the first pass (to bring in older records);
        ``report`` hears of charges the budget could not take and streams recovered."""
        self.store = store
        self._on_start = on_start
        self._client_for = client_for
        self._fail_open = fail_open
        # False: no thread; the owner (a test) calls run_due. Set it before the first use.
        self.background = background
        self.report = report
        # Epoch milliseconds; tests that move the Cycles server's clock move this one too.
        self.clock: Callable[[], int] = now_ms
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False

    # --- from the request path -----------------------------------------------------------

    def settle(self, charge: Charge) -> tuple[Landed | None, Stage]:
        """Send ``charge`` now; keep it for the settler if Cycles gave no usable answer.

        Returns how it landed (None: kept for later) and the stage it reached (past
        ``commit``: its hold had lapsed).
        """
        self.start()
        landed, charge = self._land(charge)
        if landed is None:
            self.store.add(charge, first_attempt_ms=self.clock() + FIRST_BACKOFF_MS)
            self._notify()
        return landed, charge.stage

    def keep(self, charge: Charge) -> None:
        """Keep ``charge`` for the settler without trying it here (it settles in the back)."""
        self.start()
        self.store.add(charge, first_attempt_ms=self.clock())
        self._notify()

    def catch_up(self, tenant: str) -> None:
        """Before ``tenant`` reserves: land its charges no hold covers, or refuse (503)."""
        if not self.store.has_charges(tenant):
            return
        self.start()
        at = self.clock()
        for charge in self.store.claim_due(at, FIRST_BACKOFF_MS, tenant, uncovered_only=True):
            if not self._attempt(charge):
                break  # Cycles is not answering: the rest waits for the settler
        count, total, next_ms = self.store.uncovered(tenant, self.clock())
        if count == 0 or self._fail_open:
            return
        log.warning(
            "Tenant %s has %s unsettled charge(s) of %s USD microcents; refusing new "
            "reservations until they land",
            tenant,
            count,
            total,
        )
        wait_ms = max(1_000, (next_ms or 0) - self.clock())
        raise ApiError(
            503,
            cycles_errors.UNAVAILABLE,
            "Earlier charges have not reached the budget service yet; try again shortly.",
            retry_after_ms=wait_ms,
        )

    # --- the settler thread --------------------------------------------------------------

    def start(self) -> None:
        """Adopt the streams of processes that died, then retry in the background."""
        if self._started:
            return  # every Cycles call asks: answered without the lock once started
        with self._wake:
            if self._started or self._closed:
                return
            self._started = True
        try:
            if self._on_start is not None:
                self._on_start()
            self._adopt()
        except Exception:  # the request that got here goes on; the settler's passes retry
            log.exception("Cycles settler could not read what earlier runs left")
        if self.background:
            thread = threading.Thread(target=self._loop, name="cycles-settler", daemon=True)
            with self._wake:
                self._thread = thread
            thread.start()

    def run_due(self) -> float | None:
        """One pass: try every charge that is due; seconds until the next one (None: none)."""
        self.start()
        self._adopt()
        for charge in self.store.claim_due(self.clock(), FIRST_BACKOFF_MS):
            if not self._attempt(charge):
                break  # Cycles is not answering: no point trying the others now
        next_ms = self.store.next_due_ms()
        return None if next_ms is None else max(0.0, (next_ms - self.clock()) / 1000)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.store.close()

    def _loop(self) -> None:
        while True:
            try:
                wait = self.run_due()
            except Exception:  # the settler must never die silently: log and go on
                log.exception("Cycles settlement pass failed")
                wait = FIRST_BACKOFF_MS / 1000
            with self._wake:
                if self._closed:
                    return
                self._wake.wait(timeout=IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S))
                if self._closed:
                    return

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _adopt(self) -> None:
        for charge in self.store.adopt_orphans():
            log.warning(
                "Tenant %s: reservation %s belonged to a process that died mid-stream; "
                "charging the %s USD microcents it had sent",
                charge.tenant,
                charge.reservation_id,
                charge.amount,
            )
            self.report(charge.tenant, "recovered", 0)

    def _attempt(self, charge: Charge) -> bool:
        """Try a stored charge once; False when Cycles gave no usable answer."""
        landed, _ = self._land(charge)
        if landed is None:
            return False
        self.store.remove(charge.key)
        return True

    # --- landing one charge --------------------------------------------------------------

    def _land(self, charge: Charge) -> tuple[Landed | None, Charge]:
        """Take ``charge`` through its stages: how it landed (None: try again later), and
        the charge as it now is."""
        try:
            client = self._client_for(charge.tenant)
        except KeyError:
            log.error("Tenant %s is no longer configured; its charge %s waits", *_names(charge))
            self.store.retry_at(charge.key, self.clock() + UNKNOWN_TENANT_RETRY_MS)
            return None, charge
        first = charge.stage
        while True:
            step = _STEPS[charge.stage](client, charge)
            if isinstance(step, Landed) or step is None:
                break
            self.store.advance(charge.key, step)  # kept for the next attempt, if any
            charge = replace(charge, stage=step)
        if step is None:
            return None, charge
        if step.outcome == "committed" and step.charged < charge.amount:
            self._shortfall(charge, charge.amount - step.charged)
            step = replace(step, charged=charge.amount)
        if first == "commit" and charge.stage != "commit":
            step = replace(step, outcome="late")
        if step.uncharged > 0:
            self.report(charge.tenant, "uncharged", step.uncharged)
        return step, charge

    def _shortfall(self, charge: Charge, shortfall: int) -> None:
        """The provider used more than the hold allowed for: charge the rest as debt."""
        log.warning(
            "Tenant %s: the provider reported more usage than reservation %s allowed for; "
            "charging the %s USD microcents over the estimate as debt",
            charge.tenant,
            charge.reservation_id,
            shortfall,
        )
        over = replace(
            charge,
            key=f"{charge.key}:over",
            amount=shortfall,
            covered_until_ms=0,
            stage="event",
            commit_body=None,
            event_body=_with_amount(charge.event_body, f"{charge.key}:over", shortfall),
        )
        self.settle(over)


# --- the stages: each answers Landed (done), the next stage, or None (try again later) ---


def _commit(client: CyclesClient, charge: Charge) -> Landed | Stage | None:
    assert charge.reservation_id is not None and charge.commit_body is not None
    response = client.commit_reservation(charge.reservation_id, charge.commit_body)
    if response.is_success:
        return Landed("committed", _charged(response, charge.amount), 0)
    code = cycles_errors.error_code(response)
    if response.status == 410 or code == "RESERVATION_EXPIRED":
        log.error(
            "Cycles reservation %s of tenant %s expired before its commit; recording %s as spend",
            charge.reservation_id,
            charge.tenant,
            charge.amount,
        )
        return "event"
    if code in _ALREADY_SETTLED:
        log.error("Cycles refused the commit of %s: %s", charge.reservation_id, code)
        return Landed("settled_before", 0, 0)
    return _retry_or_refused(response, code, charge, "commit")


def _event(client: CyclesClient, charge: Charge) -> Landed | Stage | None:
    response = client.create_event({**charge.event_body, "overage_policy": "ALLOW_WITH_OVERDRAFT"})
    if response.is_success:
        return _event_landed(response, charge)
    code = cycles_errors.error_code(response)
    if code in _NO_ROOM:
        return "available"
    if code == "IDEMPOTENCY_MISMATCH":
        return _settled_before(charge)
    return _retry_or_refused(response, code, charge, "spend event")


def _available(client: CyclesClient, charge: Charge) -> Landed | Stage | None:
    # Its own idempotency key: a retry must not replay the refused overdraft event.
    key = f"{charge.key}:available"
    body = {**charge.event_body, "idempotency_key": key, "overage_policy": "ALLOW_IF_AVAILABLE"}
    response = client.create_event(body)
    if response.is_success:
        return _event_landed(response, charge)
    code = cycles_errors.error_code(response)
    if code == "IDEMPOTENCY_MISMATCH":
        return _settled_before(charge)
    return _retry_or_refused(response, code, charge, "spend event")


_STEPS: dict[str, Callable[[CyclesClient, Charge], Landed | Stage | None]] = {
    "commit": _commit,
    "event": _event,
    "available": _available,
}


def _settled_before(charge: Charge) -> Landed:
    # The same key with another amount: this hold's charge landed before (its stream's last
    # record and its final charge share the key), so it must not land twice.
    log.warning("Tenant %s: charge %s was recorded before; not again", *_names(charge))
    return Landed("settled_before", 0, 0)


def _event_landed(response: CyclesResponse, charge: Charge) -> Landed:
    charged = _charged(response, charge.amount)
    if charged < charge.amount:
        log.error(
            "Tenant %s: %s of %s USD microcents recorded; %s could not be charged "
            "(no overdraft room left)%s",
            charge.tenant,
            charged,
            charge.amount,
            charge.amount - charged,
            f" for reservation {charge.reservation_id}" if charge.reservation_id else "",
        )
    return Landed("event", charged, charge.amount - charged)


def _retry_or_refused(
    response: CyclesResponse, code: str | None, charge: Charge, what: str
) -> Landed | None:
    """No answer, a 5xx, a rate limit or a rejected key may pass: try again. Any other
    refusal never will: log it (the spend is lost to the ledger) and stop trying."""
    status = response.status
    if cycles_errors.is_unavailable(status) or status in (401, 403, 429):
        log.warning(
            "Cycles %s for tenant %s did not land (HTTP %s %s); retrying in the background",
            what,
            charge.tenant,
            status,
            code,
        )
        return None
    log.error(
        "Cycles refused the %s of tenant %s for %s USD microcents for good (HTTP %s %s)",
        what,
        charge.tenant,
        charge.amount,
        status,
        code,
    )
    return Landed("refused", 0, charge.amount)


def _charged(response: CyclesResponse, default: int) -> int:
    body = response.body
    charged = body.get("charged") if isinstance(body, dict) else None
    amount = charged.get("amount") if isinstance(charged, dict) else None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else default


def _with_amount(event: dict[str, Any], key: str, amount: int) -> dict[str, Any]:
    return {**event, "idempotency_key": key, "actual": {**event["actual"], "amount": amount}}


def _names(charge: Charge) -> tuple[str, str]:
    return charge.tenant, charge.reservation_id or charge.key
