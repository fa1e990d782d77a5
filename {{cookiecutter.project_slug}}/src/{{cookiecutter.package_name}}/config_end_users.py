"""End-user budgets (``END_USER_BUDGET_USD``): each tenant's end users get a budget of their own.

A request names its end user in the body's ``user`` field (OpenAI's field for it). With
``END_USER_BUDGET_USD`` set, that end user's calls are reserved against a budget of their
own below the tenant's (budget/end_users.py), created with this allocation on first use.
A plan may set its own per-user amount (``BUDGET_PLANS=pro=50/month/user=1.00``,
config_plans.py): that plan's tenants' end users get it instead. End-user budgets are on
when either is set; with only plans setting it, END_USER_BUDGET_USD counts as 0 (the end
users of a tenant whose plan sets none are refused, never unbudgeted). Neither (the
default): off, and a request naming a user is a 400.

The app creates those budgets itself, through the Cycles admin API: outside the embedded
ledger it needs ``CYCLES_ADMIN_URL`` and ``CYCLES_ADMIN_API_KEY``.
"""

from __future__ import annotations

import re
from typing import TypedDict

from .config_values import ValueReader, quoted
from .money import usd_to_microcents

SETTING = "END_USER_BUDGET_USD"
PLANS = "BUDGET_PLANS"
# How a BUDGET_PLANS entry sets a per-user amount (config_plans.py's grammar).
PER_USER_MARK = "/user="
# An end user id is a Cycles scope value (agent:<user>): the protocol's charset, lowercase
# only because Cycles lower-cases scope values ("Bob" and "bob" would share one budget).
END_USER_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
END_USER_RULE = "1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"


class EndUserFields(TypedDict):
    end_user_allocation: int | None


def read_end_users(read: ValueReader, local_cycles: bool) -> EndUserFields:
    """The allocation of a new end user's budget in USD microcents; None: off."""
    text = read.raw(SETTING)
    # BUDGET_PLANS itself is parsed (and its errors reported) by config_plans.py; here only
    # whether some plan sets a per-user amount, which turns end-user budgets on.
    plans_per_user = any(
        PER_USER_MARK in entry.replace(" ", "") for entry in (read.raw(PLANS) or "").split(",")
    )
    if text is None and not plans_per_user:
        return EndUserFields(end_user_allocation=None)
    try:
        allocation = usd_to_microcents(text) if text is not None else 0
    except ValueError as reason:
        read.note(SETTING, f"{SETTING}={quoted(text or '')} is invalid: {reason}")
        return EndUserFields(end_user_allocation=None)
    if not local_cycles:
        cause = SETTING if text is not None else f"{PLANS}' {PER_USER_MARK[1:]}USD"
        for name in ("CYCLES_ADMIN_URL", "CYCLES_ADMIN_API_KEY"):
            if read.raw(name) is None:
                read.note(name, f"{name} is required with {cause} (the app creates budgets)")
    return EndUserFields(end_user_allocation=allocation)
