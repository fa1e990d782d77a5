"""Budget plans: an allocation and a period per plan, and the plan of each app tenant.

``BUDGET_PLANS=free=1.00/month,pro=50/month,flat=100/none`` names each plan's allocation in
US dollars and how often its spend resets (day, week, month: UTC boundaries, see
``budget/periods.py``; none: never). An optional ``/user=USD`` (``pro=50/month/user=1.00``)
gives each end user of a tenant on that plan a budget of that much, in place of
END_USER_BUDGET_USD (config_end_users.py). ``TENANT_PLANS=acme=pro,globex=free`` gives tenants a
plan and ``DEFAULT_PLAN`` gives one to every other tenant. No plans (the default): every
budget is what it was made with (``CYCLES_LOCAL_BUDGET_USD``, ``flask cycles provision
--budget-usd``), as before plans existed. Plan names and amounts are not secrets, so
messages quote them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from .config import PERIODS, TENANT_ID_RE, TENANT_ID_RULE, Plan
from .config_end_users import PER_USER_MARK
from .config_values import ValueReader, quoted
from .money import format_usd, usd_to_microcents

PLAN_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
PLAN_NAME_RULE = "1-32 lowercase letters, digits, '_' or '-', starting with a letter"
PLAN_FORM = "name=USD/period[/user=USD] like pro=50.00/month/user=1.00"
PER_USER = PER_USER_MARK.removeprefix("/")
# The settings that list the app's tenants (config_callers.py, one per tenant_auth answer).
CALLER_SETTINGS = ("TENANTS", "TENANT_API_KEYS", "CYCLES_TENANT_API_KEYS")


class PlanFields(TypedDict):
    budget_plans: Mapping[str, Plan]
    tenant_plans: Mapping[str, str]
    budget_rollover_state: Path
    cycles_local_rollover: bool


def read_plans(
    read: ValueReader, tenants: tuple[str, ...], development: bool, instance_path: Path
) -> PlanFields:
    """The plans, each served tenant's plan, and how rollovers keep track.

    ``development``: the embedded ledger outside tests and production, where the app rolls
    its budgets over by itself unless CYCLES_LOCAL_ROLLOVER=false.
    """
    plans = read_plan_table(read)
    state = read.raw("BUDGET_ROLLOVER_STATE")
    return PlanFields(
        budget_plans=plans,
        tenant_plans=read_tenant_plans(read, plans, tenants),
        budget_rollover_state=(Path(state) if state else instance_path / "budget-rollover.json"),
        cycles_local_rollover=read.flag("CYCLES_LOCAL_ROLLOVER", development),
    )


def read_plan_table(read: ValueReader) -> dict[str, Plan]:
    """BUDGET_PLANS: ``name=USD/period[/user=USD]`` entries, comma-separated."""
    name = "BUDGET_PLANS"
    plans: dict[str, Plan] = {}
    entries = [part.strip() for part in (read.raw(name) or "").split(",")]
    for position, entry in enumerate(filter(None, entries), start=1):
        plan, sep, terms = (part.strip() for part in entry.partition("="))
        amount, slash, rest = (part.strip() for part in terms.partition("/"))
        period, user_slash, user_terms = (part.strip() for part in rest.partition("/"))
        if not sep or not slash or not plan or (user_slash and not user_terms.startswith(PER_USER)):
            problem = f"entry {position} {quoted(entry)} is invalid: expected {PLAN_FORM}"
        elif not PLAN_NAME_RE.fullmatch(plan):
            problem = f"plan name {quoted(plan)} is invalid: expected {PLAN_NAME_RULE}"
        elif plan in plans:
            problem = f"plan {quoted(plan)} is defined twice"
        elif period.lower() not in PERIODS:
            problem = (
                f"plan {quoted(plan)}: period {quoted(period)} is invalid: expected "
                f"{', '.join(PERIODS[:-1])} or {PERIODS[-1]}"
            )
        else:
            try:
                allocated = usd_to_microcents(amount)
            except ValueError as reason:
                problem = f"plan {quoted(plan)}: amount is invalid: {reason}"
            else:
                per_user_text = user_terms.removeprefix(PER_USER).strip() if user_slash else None
                per_user, problem = _per_user(plan, per_user_text, allocated)
                if not problem:
                    period_name = next(p for p in PERIODS if p == period.lower())
                    plans[plan] = Plan(plan, allocated, period_name, per_user)
                    continue
        read.note(name, f"{name}: {problem}")
    return plans


def _per_user(plan: str, text: str | None, allocated: int) -> tuple[int | None, str]:
    """A plan's ``/user=USD`` in microcents (None when absent), or a problem naming it."""
    if text is None:
        return None, ""
    try:
        per_user = usd_to_microcents(text)
    except ValueError as reason:
        return None, f"plan {quoted(plan)}: user amount is invalid: {reason}"
    if per_user > allocated:
        # One end user could then spend more than the whole tenant: Cycles would stop the
        # tenant first, so the per-user figure would be a promise the app cannot keep.
        return None, (
            f"plan {quoted(plan)}: user amount {quoted(text)} is above the plan's allocation "
            f"({format_usd(allocated)})"
        )
    return per_user, ""


def read_tenant_plans(
    read: ValueReader, plans: Mapping[str, Plan], tenants: tuple[str, ...]
) -> dict[str, str]:
    """Each served tenant's plan name: TENANT_PLANS, else DEFAULT_PLAN (if set)."""
    known = f"BUDGET_PLANS defines {', '.join(plans) or 'none'}"
    plans_fine = read.fine("BUDGET_PLANS")
    default = read.raw("DEFAULT_PLAN")
    if default is not None and plans_fine and default not in plans:
        read.note("DEFAULT_PLAN", f"DEFAULT_PLAN={quoted(default)} is not a plan ({known})")
        default = None
    name = "TENANT_PLANS"
    served = set(tenants) if read.fine(*CALLER_SETTINGS) else None
    chosen: dict[str, str] = {}
    entries = [part.strip() for part in (read.raw(name) or "").split(",")]
    for position, entry in enumerate(filter(None, entries), start=1):
        tenant, sep, plan = (part.strip() for part in entry.partition("="))
        if not sep or not tenant or not plan:
            problem = f"entry {position} {quoted(entry)} is invalid: expected tenant=plan"
        elif not TENANT_ID_RE.fullmatch(tenant):
            problem = f"tenant id {quoted(tenant)} is invalid: expected {TENANT_ID_RULE}"
        elif tenant in chosen:
            problem = f"tenant {quoted(tenant)} is given a plan twice"
        elif plans_fine and plan not in plans:
            problem = f"tenant {quoted(tenant)}: plan {quoted(plan)} is not a plan ({known})"
        elif served is not None and tenant not in served:
            problem = f"tenant {quoted(tenant)} is not a tenant of this app"
        else:
            chosen[tenant] = plan
            continue
        read.note(name, f"{name}: {problem}")
    if not plans_fine:
        return {}
    defaults = dict.fromkeys(tenants, default) if default else {}
    return {
        tenant: plan
        for tenant, plan in {**defaults, **chosen}.items()
        if plan is not None and plan in plans
    }
