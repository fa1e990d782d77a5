"""Fit-to-budget: when a call's worst case does not fit, serve it with fewer output tokens.

With ``FIT_TO_BUDGET_MIN_TOKENS`` set (off by default: a caller asking for ``max_tokens``
gets that or a 402, unless the operator opts in), a budget denial is sized from the
caller's balances, the rows read to explain the denial (denials.py; no second read): the
least that remains on the budgets the call is checked against (the tenant's, and the
model's and the end user's where they have one) buys some number of output tokens over
the prompt's worst-case input. If that is at least the floor,
the call is reserved again for exactly that many output tokens: the reservation is the
call's upper bound as always (the provider is given that ``max_tokens``), and Cycles checks
it against every budget again, so a fitted call can never take more than remains. Below
the floor the 402 stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..cycles.clients import Balance
from ..cycles.errors import is_budget_denial
from ..errors import ApiError
from . import pricing
from .denials import BALANCES_FACT
from .reservations import subject_body

if TYPE_CHECKING:
    from .service import BudgetService


def affordable_output(
    texts: tuple[str, ...], prices: pricing.ModelPrices, remaining: int, limit: int
) -> int:
    """The most output tokens (at most ``limit``) whose worst-case estimate fits in
    ``remaining`` microcents; 0 when not even the input fits.

    Found with the estimate itself (it grows with max_tokens), so the answer is exactly what
    the reservation will be, however pricing.py prices the input.
    """
    low, high = 0, limit
    if pricing.estimate(*texts, max_tokens=0, prices=prices) > remaining:
        return 0
    while low < high:  # the estimate of ``low`` fits; find the last one that does
        middle = (low + high + 1) // 2
        if pricing.estimate(*texts, max_tokens=middle, prices=prices) <= remaining:
            low = middle
        else:
            high = middle - 1
    return low


def remaining_for(
    budget: BudgetService,
    tenant: str,
    model: str,
    user: str,
    rows: Sequence[Balance] | None = None,
) -> int | None:
    """The least that remains on the caller's budgets along the call's scopes, from
    ``rows`` (the caller's balances), else from one balance read; None when they cannot be
    read or no row is on the call's path."""
    subject = subject_body(budget, tenant, model, user)
    path = "/".join(f"{level}:{value.lower()}" for level, value in subject.items())
    if rows is None:
        try:
            rows = budget.cycles.balances(tenant)
        except ApiError:
            return None
    on_path = [row.remaining for row in rows if f"{path}/".startswith(f"{row.scope.lower()}/")]
    return min(on_path) if on_path else None


def fitted_max_tokens(
    budget: BudgetService,
    tenant: str,
    denial: ApiError,
    *,
    texts: tuple[str, ...],
    max_tokens: int,
    model: str = "",
    user: str = "",
) -> int | None:
    """The lower ``max_tokens`` to reserve instead after ``denial``, or None: fitting is
    off, the refusal is not for lack of budget, or what remains buys less than the floor."""
    floor = budget.settings.fit_min_tokens
    # Only a budget denial is fitted: never an outage (503) or a rate limit (429).
    if floor == 0 or not is_budget_denial(denial) or budget.settings.cycles_mode != "enforce":
        return None
    # The denial's explanation read the balances already (denials.py): use that read.
    known = denial.facts.get(BALANCES_FACT)
    rows = list(known) if isinstance(known, tuple) else None
    remaining = remaining_for(budget, tenant, model, user, rows)
    if remaining is None:
        return None
    prices = budget.settings.prices_of(model or None)
    # Below the asked max_tokens: that much was just refused.
    tokens = affordable_output(texts, prices, remaining, max_tokens - 1)
    return tokens if tokens >= floor else None
