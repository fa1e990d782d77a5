"""``flask cycles rollover``, ``set-budget`` and ``reset``: budgets over time, by hand.

``rollover`` resets the spend of every budget whose plan period has ended
(budget/rollover.py); compose runs it every minute against the real admin server, and in
development the app does it by itself (budget/rollover_timer.py). ``set-budget`` and
``reset`` let a developer (or an operator) give a tenant a budget of any size and start it
afresh, for example to watch a 402. All three go through the Cycles admin API, so they work
on the embedded ledger and on a real admin server alike.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from ..budget.plans import describe, planned_budgets
from ..budget.rollover import roll_over
from ..budget.rollover_state import RolloverState, RolloverStateError
from ..budget.rollover_timer import LOCAL_SERVER
from ..config import app_settings
from ..cycles import admin_api, key_expiry
from ..money import format_usd
from .arguments import app_tenant, check_tenant_id, dollars
from .endpoints import admin_endpoint, budget_home


@click.command("rollover", short_help="Reset spend of budgets whose plan period ended.")
@with_appcontext
def rollover() -> None:
    """Start a new period (RESET_SPENT: spent back to 0, the plan's allocation; live holds
    and debt kept) on every planned budget whose period ended since it last rolled over.
    Safe to run every minute and after downtime: a budget rolls over once per period, and a
    budget seen for the first time is tracked from the current period."""
    app = current_app
    settings = app_settings(app)
    budgets = [b for b in planned_budgets(settings) if b.plan.period != "none"]
    if not budgets:
        click.echo("no tenant has a plan with a period (BUDGET_PLANS): nothing to roll over")
        return
    admin = admin_endpoint(app)
    # The record of a real admin server is kept apart from the embedded ledger's.
    server = settings.cycles_admin_url or LOCAL_SERVER
    state = RolloverState(settings.budget_rollover_state, server)
    failed = 0
    try:
        for done in roll_over(admin, budgets, state, key_expiry.now(app)):
            click.echo(done.describe(), err=done.outcome == "failed")
            failed += done.outcome == "failed"
    except RolloverStateError as exc:
        raise click.ClickException(str(exc)) from None
    if failed:
        raise click.ClickException(f"{failed} budget(s) not rolled over (see above)")


@click.command("set-budget", short_help="Set a tenant's allocation in US dollars.")
@click.argument("tenant")
@click.argument("usd")
@with_appcontext
def set_budget(tenant: str, usd: str) -> None:
    """Set TENANT's allocation to USD (like 0.001); spend, live holds and debt are kept (the
    RESET funding operation). A plan sets it back at the tenant's next rollover."""
    app = current_app
    name = app_tenant(app, check_tenant_id(tenant))
    microcents = dollars(usd)
    home = budget_home(app, name)
    result = admin_api.set_allocation(
        admin_endpoint(app), home.cycles_tenant, home.scope, microcents
    )
    before = format_usd(admin_api.ledger_amount(result, "previous_allocated"))
    remaining = format_usd(admin_api.ledger_amount(result, "new_remaining"))
    click.echo(
        f"{home.scope}: allocated {before} -> {format_usd(microcents)}; remaining {remaining}"
    )
    plan = app_settings(app).plan_for(name)
    if plan is not None and plan.period != "none":
        click.echo(f"(plan {describe(plan)}: the next rollover sets it back)")


@click.command("reset", short_help="Set a tenant's spent back to $0.")
@click.argument("tenant")
@with_appcontext
def reset(tenant: str) -> None:
    """Start TENANT's budget afresh: spent back to 0 with its allocation as it is (the
    RESET_SPENT funding operation); live holds and debt are kept, as Cycles defines it."""
    app = current_app
    name = app_tenant(app, check_tenant_id(tenant))
    home = budget_home(app, name)
    admin = admin_endpoint(app)
    ledger = admin_api.find_budget(admin, home.cycles_tenant, home.scope)
    if ledger is None:
        raise click.ClickException(
            f"{name} has no budget at {home.scope}: create it with `flask cycles provision {name}`"
        )
    allocated = admin_api.ledger_amount(ledger, "allocated")
    done = admin_api.reset_spent(admin, home.cycles_tenant, home.scope, allocated, "manual reset")
    spent = format_usd(admin_api.ledger_amount(done.result, "previous_spent"))
    remaining = format_usd(admin_api.ledger_amount(done.result, "new_remaining"))
    debt = admin_api.ledger_amount(done.result, "new_debt")
    kept = f", debt {format_usd(debt)} kept" if debt else ""
    click.echo(f"{home.scope}: spent {spent} -> $0.00; remaining {remaining}{kept}")


COMMANDS = (rollover, set_budget, reset)
