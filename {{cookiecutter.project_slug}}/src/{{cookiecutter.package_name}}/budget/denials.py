"""What a budget denial tells the caller: the estimate that did not fit, what remains of
the caller's own budget, and how to get more.

Cycles' denial of a reservation (409 ``BUDGET_EXCEEDED``, ``DEBT_OUTSTANDING``, ...)
carries no balances: the protocol's error body has only an open ``details`` object, and
the reference server fills none for a denial. So what remains is read once, with
``GET /v1/balances``, when Cycles denies; the deny cache (deny_cache.py) keeps that answer
and gives it to the tenant's next denials without calling Cycles, and fit-to-budget
(fit.py) sizes its smaller call from the same rows. A served request never pays for this
read. If the read fails, the 402 still stands, without what remains.

What remains is the caller's own scope (tenancy.py): a denial can also come from a wider
budget (the operator's cap, in workspace isolation), whose figures a caller never sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cycles.scope_balance import is_own
from ..errors import ApiError
from ..money import usd_text

if TYPE_CHECKING:
    from .service import BudgetService

# The key of ``ApiError.facts`` under which an explained denial carries the caller's
# balances as read to explain it (a tuple of ``Balance``).
BALANCES_FACT = "balances"


def default_topup_message(tenant: str) -> str:
    return (
        "Ask the operator of this service for more budget "
        f"(they run: flask cycles fund {tenant} <USD>)."
    )


def explain(budget: BudgetService, tenant: str, error: ApiError) -> ApiError:
    """``error`` (Cycles' denial) with what remains and how to get more, for its body."""
    hint = budget.settings.budget_topup_message or default_topup_message(tenant)
    details: dict[str, str | int] = {"how_to_get_more": hint}
    try:
        rows = budget.cycles.balances(tenant)
    except ApiError:
        return error.with_details(**details)  # the denial stands; what remains goes unsaid
    balance = next((b for b in rows if is_own(budget.settings, tenant, b.scope)), None)
    if balance is not None:
        details.update(
            remaining_microcents=balance.remaining,
            remaining_usd=usd_text(balance.remaining),
            limit_microcents=balance.allocated,
            limit_usd=usd_text(balance.allocated),
        )
    # The rows go with the denial: fit-to-budget (fit.py) works from this one read.
    return error.with_details(**details).with_facts(**{BALANCES_FACT: tuple(rows)})


def for_estimate(error: ApiError, estimate: int) -> ApiError:
    """The denial as this request gets it: naming its own estimate (a cached denial was
    made for another request's)."""
    return error.with_details(estimate_microcents=estimate, estimate_usd=usd_text(estimate))
