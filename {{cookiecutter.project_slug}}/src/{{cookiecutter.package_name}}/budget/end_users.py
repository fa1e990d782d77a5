"""End users' budgets: each below its tenant's, made on first use with the tenant's plan's
per-user amount (``BUDGET_PLANS=pro=50/month/user=1.00``), else END_USER_BUDGET_USD.

An end user's calls carry it as the subject's ``agent`` level (reservations.py), the level
below the tenant's scope and the model's, so one reservation checks the end user's budget
and the tenant's (and the model's, where one is set) at once. Cycles skips a scope
without a budget, so the end user's budget must exist before the first reservation: the
app creates it through the admin API (``POST /v1/admin/budgets``), which answers 409
``DUPLICATE_RESOURCE`` for a scope that has one. Two first calls racing (in this process
or in two workers) therefore both succeed and the budget is funded once; an existing
budget is never topped up again. Scopes known to exist are remembered per process, so a
served request still costs two Cycles calls once its end user is known.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import click
from flask import Flask

from ..config_end_users import END_USER_RE, END_USER_RULE
from ..cycles import admin_api, tenancy
from ..cycles.admin_api import Endpoint
from ..cycles.clients import Balance
from ..errors import ApiError
from .reservations import subject_body

if TYPE_CHECKING:
    from .service import BudgetService

log = logging.getLogger(__name__)

EXTENSION = "end_user_budgets"
# Known scopes kept per process; past this many the set starts afresh (a creation is only
# one more admin call that answers "exists").
MAX_KNOWN = 100_000


def scope_of(budget: BudgetService, tenant: str, user: str, model: str = "") -> str:
    """The scope of ``user``'s budget under ``tenant`` (for ``model``, when models are
    scopes: config_models.py), as Cycles derives it from the call's subject."""
    subject = subject_body(budget, tenant, model, user)
    return "/".join(f"{level}:{value.lower()}" for level, value in subject.items())


class EndUserBudgets:
    """Makes sure an end user's budget exists before its first reservation."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, budget: BudgetService, tenant: str, user: str, model: str = "") -> None:
        """Create ``user``'s budget unless it exists; ApiError 503 when that fails."""
        allocation = allocation_for(budget, tenant)
        scope = scope_of(budget, tenant, user, model)
        with self._lock:
            if scope in self._known:
                return
        owner = tenancy.cycles_tenant(budget.settings, tenant)
        try:
            admin_api.create_budget(_admin(budget), owner, scope, allocation, report=False)
        except click.ClickException as error:
            log.error("End-user budget %s could not be created: %s", scope, error.message)
            raise ApiError(
                503, "cycles_unavailable", "The budget service is unavailable; try again later."
            ) from None
        with self._lock:
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            self._known.add(scope)


def allocation_for(budget: BudgetService, tenant: str) -> int:
    """A new end user's allocation under app tenant ``tenant``, in USD microcents: its plan's
    per-user amount if the plan sets one, else END_USER_BUDGET_USD; ApiError 400 when off."""
    settings = budget.settings
    if settings.end_user_allocation is None:
        raise ApiError(400, "invalid_request", "user: end-user budgets are not enabled.")
    plan = settings.plan_for(tenant)
    if plan is not None and plan.per_user is not None:
        return plan.per_user
    return settings.end_user_allocation


def _admin(budget: BudgetService) -> Endpoint:
    """The Cycles admin API: the configured one, else the embedded ledger's."""
    settings = budget.settings
    if settings.cycles_admin_url and settings.cycles_admin_api_key:
        url, key = settings.cycles_admin_url, settings.cycles_admin_api_key
    else:
        embedded = budget.cycles.connection().ledger
        if embedded is None or not embedded.admin_key:
            raise click.ClickException("no Cycles admin API (CYCLES_ADMIN_URL)")
        url, key = embedded.base_url, embedded.admin_key
    return Endpoint(url.rstrip("/"), {"X-Admin-API-Key": key})


def end_user_budgets(app: Flask) -> EndUserBudgets:
    """The app's end-user budgets (made on first use; kept on the app, like its clients)."""
    found: EndUserBudgets = app.extensions.setdefault(EXTENSION, EndUserBudgets())
    return found


def checked_user(user: str) -> str:
    """``user`` if it is an end-user id, else ApiError 400 (it becomes a Cycles filter)."""
    if not END_USER_RE.fullmatch(user):
        raise ApiError(400, "invalid_request", f"user: must be {END_USER_RULE}.")
    return user


def end_user_balances(balances: list[Balance], user: str) -> list[Balance]:
    """The rows of ``balances`` (a tenant's own) that are ``user``'s budgets (one per model
    when models are scopes); ApiError 400 for an invalid id, 404 when there are none."""
    checked_user(user)
    found = [row for row in balances if row.scope.lower().endswith(f"/agent:{user}")]
    if not found:
        raise ApiError(404, "not_found", "No budget for this end user (it has made no call).")
    return found
