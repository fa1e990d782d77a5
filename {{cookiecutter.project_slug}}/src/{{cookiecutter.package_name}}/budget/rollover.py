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

End users' budgets (``end_users.py``: the scopes below a tenant's whose last level is
``agent:``) roll over with their tenant's plan, when it has a per-user amount: each is
reset to that amount by the same rule, key and record, one line each. Listing them costs
calls, so their tenant has one more record standing for all of them (``<scope>/agent:*``):
while it is current no call is made; first seen, it is tracked from the current period with
no call; older, the end users are listed (every page) and each rolled over, and it is
recorded once none failed (so a failure is retried, the others then being current). An end
user with no record of its own is new since the last listing: it is reset if its budget was
made before the current period began (it has lived through a boundary its tenant's record
says it has not had), else tracked. Lost records therefore never reset twice: the tenant's
record is tracked afresh, without a listing, and no end user is touched in that period.
Frozen and closed end-user budgets are left alone (the admin API refuses to fund them).
A limit of the reference admin server's listing: it refuses (400 LIMIT_EXCEEDED) to list
more than 20,000 budgets under one prefix, or any of a Cycles tenant with over 50,000
budgets; past that a tenant's end users are reported "failed" at every run of the period.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import click

from ..config import parse_instant
from ..cycles import admin_api
from ..cycles.admin_api import Endpoint, Json
from .periods import period_bounds
from .plans import PlannedBudget
from .rollover_state import RolloverState

END_USER_LEVEL = "agent:"
# The record standing for all of a tenant's end users; "*" is no end user id (END_USER_RE).
EVERY_END_USER = "*"
# End users are reset and recorded this many at a time: one write of the record per batch,
# and a crash loses at most a batch's records (whose keys the server then replays).
BATCH = 100


@dataclass(frozen=True)
class Rollover:
    """What a run did to one budget."""

    budget: PlannedBudget  # an end user's: its tenant's, with the end user's scope
    outcome: str  # "reset", "current", "tracked" (first seen), "never" (period none),
    # "failed", "inactive" (an end user's budget frozen or closed: left alone)
    period_start: datetime | None
    period_end: datetime | None
    error: str = ""  # why it failed (it is tried again on the next run), or the status
    end_user: str = ""  # "": the tenant's own budget; EVERY_END_USER: all its end users'

    def describe(self) -> str:
        budget, start, end = self.budget, iso(self.period_start), iso(self.period_end)
        period = f"the {budget.plan.period} from {start}"
        what = {
            "reset": f"spent reset for {period}; next at {end}",
            "current": f"already rolled over to {period}; next at {end}",
            "tracked": f"tracked from {period}; first reset at {end}",
            "never": "its plan never resets",
            "failed": f"not rolled over to {period} (tried again on the next run): {self.error}",
            "inactive": f"not rolled over to {period}: its budget is {self.error}",
        }[self.outcome]
        who = budget.tenant
        if self.end_user == EVERY_END_USER:
            who = f"{who}'s end users"
        elif self.end_user:
            who = f"{who} end user {self.end_user}"
        return f"{who} ({budget.scope}, plan {budget.plan.name}): {what}"


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def rollover_key(scope: str, start: datetime) -> str:
    """The idempotency key of the reset of ``scope`` into the period starting at ``start``."""
    return f"rollover:{scope}:{iso(start)}"


def roll_over(
    admin: Endpoint, budgets: Iterable[PlannedBudget], state: RolloverState, now: datetime
) -> Iterator[Rollover]:
    """Roll each budget, then its end users' (see above), over to the period containing
    ``now``, one at a time. A budget the admin API refuses (frozen, closed, gone) or cannot
    be reached for is reported "failed", not recorded, and the others go on."""
    for budget in budgets:
        start, end = period_bounds(budget.plan.period, now)
        if start is None or end is None:
            yield Rollover(budget, "never", None, None)
            continue
        last = state.rolled_to(budget.scope)
        done = _roll(admin, budget, budget.plan.allocated, last, start, end)
        if done.outcome in ("reset", "tracked"):
            state.record(budget.scope, start)
        yield done
        if budget.plan.per_user is not None:
            yield from _roll_end_users(admin, budget, budget.plan.per_user, state, start, end)


def _roll(
    admin: Endpoint,
    budget: PlannedBudget,
    amount: int,
    last: datetime | None,
    start: datetime,
    end: datetime,
    *,
    end_user: str = "",
    lived_before: bool = False,
) -> Rollover:
    """Reset ``budget`` to ``amount`` unless it is current or first seen (``last`` None and
    not ``lived_before``); the caller records "reset" and "tracked"."""
    if last is not None and last >= start:
        return Rollover(budget, "current", start, end, end_user=end_user)
    if last is None and not lived_before:
        return Rollover(budget, "tracked", start, end, end_user=end_user)
    reason = f"rollover: new {budget.plan.period} from {iso(start)}"
    # A refused key reuse (the plan changed since a run that reset this very period) means
    # the reset was done: recorded like one that was just made.
    try:
        admin_api.reset_spent(
            admin,
            budget.cycles_tenant,
            budget.scope,
            amount,
            reason,
            idempotency_key=rollover_key(budget.scope, start),
        )
    except click.ClickException as exc:
        return Rollover(budget, "failed", start, end, exc.message, end_user=end_user)
    return Rollover(budget, "reset", start, end, end_user=end_user)


def _roll_end_users(
    admin: Endpoint,
    tenant: PlannedBudget,
    amount: int,
    state: RolloverState,
    start: datetime,
    end: datetime,
) -> Iterator[Rollover]:
    """Roll ``tenant``'s end users' budgets over to ``start`` (the rule above)."""
    everyone = replace(tenant, scope=f"{tenant.scope}/{END_USER_LEVEL}{EVERY_END_USER}")
    last = state.rolled_to(everyone.scope)
    if last is None or last >= start:
        if last is None:
            state.record(everyone.scope, start)
        outcome = "tracked" if last is None else "current"
        yield Rollover(everyone, outcome, start, end, end_user=EVERY_END_USER)
        return
    try:
        ledgers = admin_api.list_budgets(admin, tenant.cycles_tenant, tenant.scope)
    except click.ClickException as exc:
        yield Rollover(everyone, "failed", start, end, exc.message, end_user=EVERY_END_USER)
        return
    rows = [row for row in ledgers if end_user_of(row, tenant.scope)]
    failed = False
    for first in range(0, len(rows), BATCH):
        batch = rows[first : first + BATCH]
        known = state.rolled_to_each(str(row["scope"]) for row in batch)
        done = []
        for row in batch:
            scope, user = str(row["scope"]), end_user_of(row, tenant.scope)
            budget = replace(tenant, scope=scope)
            status = row.get("status", "ACTIVE")
            if status != "ACTIVE":
                done.append(Rollover(budget, "inactive", start, end, str(status), user))
                continue
            lived_before = (_created(row) or start) < start
            done.append(
                _roll(
                    admin,
                    budget,
                    amount,
                    known[scope],
                    start,
                    end,
                    end_user=user,
                    lived_before=lived_before,
                )
            )
        state.record_each(
            (d.budget.scope for d in done if d.outcome in ("reset", "tracked")), start
        )
        failed = failed or any(d.outcome == "failed" for d in done)
        yield from done
    if not failed:
        state.record(everyone.scope, start)


def end_user_of(ledger: Json, tenant_scope: str) -> str:
    """The end user whose budget ``ledger`` is, if it is one below ``tenant_scope`` ("" if
    not: the tenant's own, a model's, or another tenant's that shares the prefix)."""
    scope = ledger.get("scope")
    if not isinstance(scope, str) or not scope.startswith(tenant_scope + "/"):
        return ""
    level = scope.rsplit("/", 1)[-1]
    return level.removeprefix(END_USER_LEVEL) if level.startswith(END_USER_LEVEL) else ""


def _created(ledger: Json) -> datetime | None:
    """When the budget was made (None when the answer does not say in a form we read)."""
    text = ledger.get("created_at")
    try:
        return parse_instant(text) if isinstance(text, str) else None
    except ValueError:
        return None
