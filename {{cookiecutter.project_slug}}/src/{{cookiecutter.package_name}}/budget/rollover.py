"""Rollover: at each period boundary a planned budget's spend goes back to zero.

Cycles has no scheduler of its own: a budget starts a new period when the operator sends
the ``RESET_SPENT`` funding operation. Its reference semantics: allocated becomes the
amount sent (the plan's allocation, so a changed plan applies from the next period on),
spent becomes 0, live holds (reserved) stay, as their calls straddle the boundary, and debt
stays (a new period forgives no debt; REPAY_DEBT does). Remaining follows the ledger's
invariant and may stay negative under debt.

:func:`roll_over` is safe to run every minute and after any downtime: the period containing
``now`` (UTC, ``periods.py``) is compared with the one each budget last rolled over to
(``rollover_state.py``). Current: no call. Older, however many periods ago: one reset, to the
current period (a missed period rolls over once, not once per period missed). Each reset
carries the idempotency key ``rollover:<scope>:<period start>``, so two runs racing on one
boundary reset once. A budget seen for the first time is tracked from the current period
without a reset (spend is never forgiven by surprise; ``flask cycles reset`` does it by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from ..cycles import admin_api
from ..cycles.admin_api import Endpoint
from .periods import period_bounds
from .plans import PlannedBudget
from .rollover_state import RolloverState


@dataclass(frozen=True)
class Rollover:
    """What a run did to one budget."""

    budget: PlannedBudget
    outcome: str  # "reset", "current", "tracked" (first seen), "never" (period none), "failed"
    period_start: datetime | None
    period_end: datetime | None
    error: str = ""  # why it failed (it is tried again on the next run)

    def describe(self) -> str:
        budget, start, end = self.budget, iso(self.period_start), iso(self.period_end)
        period = f"the {budget.plan.period} from {start}"
        what = {
            "reset": f"spent reset for {period}; next at {end}",
            "current": f"already rolled over to {period}; next at {end}",
            "tracked": f"tracked from {period}; first reset at {end}",
            "never": "its plan never resets",
            "failed": f"not rolled over to {period} (tried again on the next run): {self.error}",
        }[self.outcome]
        return f"{budget.tenant} ({budget.scope}, plan {budget.plan.name}): {what}"


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def rollover_key(scope: str, start: datetime) -> str:
    """The idempotency key of the reset of ``scope`` into the period starting at ``start``."""
    return f"rollover:{scope}:{iso(start)}"


def roll_over(
    admin: Endpoint, budgets: Iterable[PlannedBudget], state: RolloverState, now: datetime
) -> Iterator[Rollover]:
    """Roll each budget over to the period containing ``now`` (see above), one at a time.
    A budget the admin API refuses (frozen, closed, gone) or cannot be reached for is
    reported "failed", not recorded, and the others go on."""
    for budget in budgets:
        start, end = period_bounds(budget.plan.period, now)
        if start is None:
            yield Rollover(budget, "never", None, None)
            continue
        last = state.rolled_to(budget.scope)
        if last is not None and last >= start:
            yield Rollover(budget, "current", start, end)
            continue
        if last is not None:
            reason = f"rollover: new {budget.plan.period} from {iso(start)}"
            # A refused key reuse (the plan changed since a run that reset this very
            # period) means the reset was done: recorded like one that was just made.
            try:
                admin_api.reset_spent(
                    admin,
                    budget.cycles_tenant,
                    budget.scope,
                    budget.plan.allocated,
                    reason,
                    idempotency_key=rollover_key(budget.scope, start),
                )
            except click.ClickException as exc:
                yield Rollover(budget, "failed", start, end, exc.message)
                continue
        state.record(budget.scope, start)
        yield Rollover(budget, "tracked" if last is None else "reset", start, end)
