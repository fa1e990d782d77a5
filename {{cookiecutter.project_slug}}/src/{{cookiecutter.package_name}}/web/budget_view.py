"""``GET /budget`` as people read it: each scope in USD microcents and in dollars, and the
budget's period (when it started, when it resets).

Dollars are exact decimal strings beside the integers (``money.usd_text``: never rounded,
never a float). The period is the caller's plan's (budget/periods.py), with its bounds in
UTC on the app's wall clock (``key_expiry.now``, which tests set); a budget without a
period (no plan, or a plan of period ``none``) shows ``"period": "none"`` and nulls.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from flask import Response, jsonify

from ..budget.periods import period_bounds
from ..config import Settings
from ..cycles.clients import Balance as CyclesBalance
from ..money import usd_text
from .schemas import Balance, BudgetResponse

NO_PERIOD = "none"


def tenant_period(
    settings: Settings, tenant: str, now: datetime
) -> tuple[str, datetime | None, datetime | None]:
    """``tenant``'s budget period at ``now``: its name, start and end (the next reset)."""
    period = plan_period(settings, tenant)
    start, end = period_bounds(period, now)
    return period, start, end


def plan_period(settings: Settings, tenant: str) -> str:
    """The period of ``tenant``'s plan; ``none`` without a plan."""
    plan = settings.plan_for(tenant)
    return NO_PERIOD if plan is None else plan.period


def iso(moment: datetime) -> str:
    """``2027-03-01T00:00:00Z``: as ``/budget`` and the ``X-Budget-Reset`` header write it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_response(
    settings: Settings, tenant: str, balances: Iterable[CyclesBalance], now: datetime
) -> Response:
    period, start, end = tenant_period(settings, tenant, now)
    body = BudgetResponse(
        tenant=tenant,
        balances=[readable(balance) for balance in balances],
        period=period,
        period_start=iso(start) if start else None,
        period_end=iso(end) if end else None,
        next_reset=iso(end) if end else None,
    )
    # Nulls kept: "no reset" is an answer here, not a missing field.
    return jsonify(body.model_dump(mode="json"))


def readable(balance: CyclesBalance) -> Balance:
    """One scope's balance with each amount in dollars beside its microcents."""
    return Balance(
        **vars(balance),
        allocated_usd=usd_text(balance.allocated),
        spent_usd=usd_text(balance.spent),
        reserved_usd=usd_text(balance.reserved),
        remaining_usd=usd_text(balance.remaining),
        debt_usd=usd_text(balance.debt),
    )
