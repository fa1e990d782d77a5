"""Budget events after a tenant's budgets change: thresholds crossed, and budgets exhausted.

``budget.exhausted`` is what the reference runtime server emits (cycles-server
``EventEmitterService.emitBalanceEvents``, after a reservation, a commit and an event): when a
budget's remaining goes from above 0 to exactly 0, with ``EventDataBudgetThreshold`` data,
``threshold`` 1.0, ``utilization`` (spent + reserved) / allocated, ``direction`` rising. Here
the previous state is kept per subscription (remaining above 0, or not), so it fires on the
way down once, and again only after remaining rose above 0.

``budget.threshold_crossed`` is the reference's deferred event (listed in its ``EventType``,
not emitted by cycles-server yet): this development stand-in fires it as follows.

For each subscription to ``budget.threshold_crossed`` (its ``thresholds.budget_utilization``
levels) and each of the tenant's budgets, utilization is ``spent / allocated``. A level at or
under it fires once: its mark is claimed, and the event queued for delivery. A level above
it is re-armed, so after a ``RESET_SPENT`` (a new period: spent falls) every level fires
again when spend crosses it. (Reserved amounts are left out: a hold that is released would
otherwise re-arm a level within one period.)

The payload is the reference's ``Event`` with ``EventDataBudgetThreshold`` data
(cycles-server-admin model: scope, unit, threshold, utilization, allocated, remaining, spent,
reserved, direction). This runs after the ledger's transaction, and delivery in the
deliverer's thread: never inside a ledger operation.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from ..ledger.local_ledger import Clock
from ..protocol import wire
from .delivery import Deliverer, Delivery
from .store import BudgetFigures, Subscription, WebhookStore

log = logging.getLogger(__name__.rsplit(".", 1)[0])

THRESHOLD_CROSSED = "budget.threshold_crossed"
EXHAUSTED = "budget.exhausted"
SOURCE = "cycles-server"


class Emitter:
    def __init__(self, store: WebhookStore, deliverer: Deliverer, clock: Clock) -> None:
        self.store = store
        self.deliverer = deliverer
        self.clock = clock

    def changed(self, tenant_id: str) -> None:
        """``tenant_id``'s budgets changed: fire and re-arm thresholds. Never raises: an event
        problem must not turn a ledger operation that succeeded into an error."""
        try:
            subscriptions = self.store.listening(tenant_id, THRESHOLD_CROSSED, EXHAUSTED)
            crossing = [sub for sub in subscriptions if THRESHOLD_CROSSED in sub.event_types]
            exhausting = [sub for sub in subscriptions if EXHAUSTED in sub.event_types]
            if not crossing and not exhausting:
                return
            budgets = self.store.budgets(tenant_id)
            for sub in crossing:
                for budget in budgets:
                    self._check(tenant_id, sub, budget)
            for sub in exhausting:
                for budget in budgets:
                    self._check_exhausted(tenant_id, sub, budget)
        except Exception:
            log.exception("threshold events for tenant %s failed", tenant_id)

    def _check(self, tenant_id: str, sub: Subscription, budget: BudgetFigures) -> None:
        if budget.allocated <= 0 or not sub.thresholds:
            return
        utilization = budget.spent / budget.allocated
        marked = self.store.marks(sub.subscription_id, budget.scope, budget.unit)
        if any(level > utilization for level in marked):
            self.store.rearm(sub.subscription_id, budget.scope, budget.unit, utilization)
        for level in sub.thresholds:
            crossed = level <= utilization and level not in marked
            if crossed and self.store.claim(sub.subscription_id, budget.scope, budget.unit, level):
                self._emit(tenant_id, sub, budget, level, utilization)

    def _check_exhausted(self, tenant_id: str, sub: Subscription, budget: BudgetFigures) -> None:
        remaining = budget.allocated - budget.spent - budget.reserved - budget.debt
        # Below zero (debt) counts as "not above 0": the way back to 0 is no new exhaustion.
        changed = self.store.set_exhausted(
            sub.subscription_id, budget.scope, budget.unit, remaining <= 0
        )
        if changed and remaining == 0:
            used = budget.spent + budget.reserved
            utilization = used / budget.allocated if budget.allocated > 0 else None
            self._emit(tenant_id, sub, budget, 1.0, utilization, EXHAUSTED)

    def _emit(
        self,
        tenant_id: str,
        sub: Subscription,
        budget: BudgetFigures,
        level: float,
        utilization: float | None,
        event_type: str = THRESHOLD_CROSSED,
    ) -> None:
        event_id = "evt_" + uuid.uuid4().hex
        event = threshold_event(event_id, self.clock(), tenant_id, budget, level, utilization)
        event["event_type"] = event_type
        body = json.dumps(event, separators=(",", ":")).encode("utf-8")
        self.deliverer.submit(Delivery(sub.url, sub.secret, body, event_id, event_type))


def threshold_event(
    event_id: str,
    now_ms: int,
    tenant_id: str,
    budget: BudgetFigures,
    level: float,
    utilization: float | None,
) -> dict[str, Any]:
    data = {
        "scope": budget.scope,
        "unit": budget.unit,
        "threshold": level,
        "utilization": None if utilization is None else round(utilization, 6),
        "allocated": budget.allocated,
        "remaining": budget.allocated - budget.spent - budget.reserved - budget.debt,
        "spent": budget.spent,
        "reserved": budget.reserved,
        "direction": "rising",
    }
    return {
        "event_id": event_id,
        "event_type": THRESHOLD_CROSSED,
        "category": "budget",
        "timestamp": wire.iso(now_ms),
        "tenant_id": tenant_id,
        "scope": budget.scope,
        "source": SOURCE,
        # Omitted, never null (as the reference's NON_NULL JSON).
        "data": {key: value for key, value in data.items() if value is not None},
    }
