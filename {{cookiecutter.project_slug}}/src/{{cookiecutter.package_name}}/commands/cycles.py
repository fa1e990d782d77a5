"""``flask cycles ...``: provision Cycles tenants, runtime keys and budgets; fund them; show
balances and when the keys end.

Provisioning goes through the Cycles admin API (cycles/admin_api.py), so the same commands
set up the embedded development ledger and a real Cycles stack. Where an app tenant's
budget lives is the app's own answer (cycles/tenancy.py), and balances are read by the
app's own code with its own runtime keys: what the app sees. Runtime keys end
(cycles/key_expiry.py): provision gives each an explicit lifetime, records its end, and
rotates one that is near it (runtime_keys.py); ``check-keys`` tells how long each has left.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ..budget.plans import apply_plan, planned_budgets
from ..config import app_settings
from ..cycles import key_expiry, tenancy
from ..cycles.admin_api import RuntimeKey, create_budget, create_tenant, fund_budget
from ..cycles.clients import cycles_clients
from ..errors import ApiError
from ..money import format_usd
from . import budgets
from .alert_webhooks import subscribe_receiver
from .arguments import app_tenant, check_tenant_id, dollars
from .endpoints import admin_endpoint, budget_home
from .keys_file import read_keys_file, recorded_expiries, recorded_keys, write_keys_file
from .runtime_keys import Recorded, runtime_key

group = AppGroup("cycles", help="Provision Cycles tenants, keys and budgets; show balances.")
for _command in budgets.COMMANDS:  # rollover, set-budget, reset (budgets.py)
    group.add_command(_command)


@group.command("provision", short_help="Create tenants, runtime keys and budgets.")
@click.argument("tenant_ids", metavar="[TENANT]...", nargs=-1)
@click.option(
    "--budget-usd",
    default="5.00",
    show_default=True,
    envvar="CYCLES_BOOTSTRAP_BUDGET_USD",
    help="Allocation of each new budget of a tenant without a plan, in US dollars.",
)
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the runtime keys in this env file: reused when present, written when made.",
)
@click.option(
    "--rotate-keys",
    is_flag=True,
    help="Make new runtime keys even where working ones exist.",
)
def provision(
    tenant_ids: tuple[str, ...], budget_usd: str, keys_file: Path | None, rotate_keys: bool
) -> None:
    """Create the Cycles tenants, runtime API keys and budgets of TENANTs (default: every
    tenant of the app).

    A tenant with a plan (BUDGET_PLANS) gets the plan's allocation, also on a budget that
    exists (its spend is kept); others get --budget-usd on a new budget.

    Safe to re-run: existing tenants, budgets (and their spend) are kept, and so is any
    runtime key that still works (from --keys-file or the app's settings) unless it ends
    within CYCLES_KEY_WARN_DAYS: that one is rotated; --rotate-keys rotates every key. New
    keys live CYCLES_KEY_TTL_DAYS. Prints the settings that give the app its keys and their
    expiry (CYCLES_KEY_EXPIRES_AT), or writes them to --keys-file.
    """
    app = current_app
    microcents = dollars(budget_usd)
    names = [check_tenant_id(name) for name in tenant_ids] or list(app_settings(app).tenants)
    admin = admin_endpoint(app)
    known = read_keys_file(keys_file) if keys_file else {}
    recorded = Recorded(
        recorded_keys(known), recorded_expiries(known, keys_file) if keys_file else {}
    )
    homes = [budget_home(app, name) for name in names]
    keys: dict[str, RuntimeKey] = {}
    for home in homes:
        if home.cycles_tenant not in keys:
            create_tenant(admin, home.cycles_tenant)
            keys[home.cycles_tenant] = runtime_key(
                app, admin, home.cycles_tenant, recorded, rotate_keys
            )
    planned = {budget.tenant: budget for budget in planned_budgets(app_settings(app), names)}
    for name, home in zip(names, homes, strict=True):
        if name in planned:
            apply_plan(admin, planned[name])  # the plan's allocation, new or existing
        else:
            create_budget(admin, home.cycles_tenant, home.scope, microcents)
    subscribe_receiver(app, admin, (home.cycles_tenant for home in homes))
    # Keys of tenants not provisioned this time stay in the file as they were.
    secrets_by_tenant = {tenant: key.secret for tenant, key in keys.items()}
    values = tenancy.key_settings(app_settings(app), {**recorded.keys, **secrets_by_tenant})
    # A key whose end is unknown drops its tenant's entry: never a stale one of another key.
    ends = {**recorded.expiries, **{tenant: key.expires_at for tenant, key in keys.items()}}
    expiries = {tenant: end for tenant, end in ends.items() if end is not None}
    if expiries or "CYCLES_KEY_EXPIRES_AT" in known:
        values["CYCLES_KEY_EXPIRES_AT"] = key_expiry.encode(expiries)
    if keys_file:
        write_keys_file(keys_file, {**known, **values})
        click.echo(f"settings written to {keys_file}")
    else:
        click.echo("\nThe app's environment needs (keep it secret):")
        for name, value in values.items():
            click.echo(f"{name}={value}")


MAX_REASON_CHARS = 512


@group.command("fund", short_help="Add US dollars to a tenant's budget.")
@click.argument("tenant")
@click.argument("usd")
@click.option("--reason", default="manual top-up", show_default=True)
def fund(tenant: str, usd: str, reason: str) -> None:
    """Add USD (more than 0, like 10.00) to TENANT's budget: a CREDIT funding operation."""
    app = current_app
    microcents = dollars(usd, positive=True)
    if len(reason) > MAX_REASON_CHARS:  # the admin API's limit (BudgetFundingRequest)
        raise click.BadParameter(
            f"at most {MAX_REASON_CHARS} characters (got {len(reason)})", param_hint="--reason"
        )
    home = budget_home(app, check_tenant_id(tenant))
    result = fund_budget(admin_endpoint(app), home.cycles_tenant, home.scope, microcents, reason)
    remaining = result.get("new_remaining")
    amount = remaining.get("amount") if isinstance(remaining, dict) else None
    shown = format_usd(amount) if isinstance(amount, int) else "unknown"
    click.echo(f"{home.scope}: remaining {shown}")


BALANCE_COLUMNS = ("allocated", "spent", "reserved", "debt", "remaining")


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # Text columns left-aligned, amounts right-aligned (they line up on the decimal point
    # often enough to compare at a glance).
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


@group.command("balances", short_help="Show the tenants' budgets as the app sees them.")
@click.argument("tenant", required=False)
def balances(tenant: str | None) -> None:
    """Show the Cycles balances of TENANT (default: every tenant of the app), read with the
    app's own runtime keys."""
    app = current_app
    names = [app_tenant(app, check_tenant_id(tenant))] if tenant else app_settings(app).tenants
    rows: list[list[str]] = []
    for name in names:
        try:
            found = cycles_clients(app).balances(name)
        except ApiError as exc:
            raise click.ClickException(f"cannot read {name}'s balances: {exc.message}") from None
        for row in found:
            amounts = (format_usd(getattr(row, column)) for column in BALANCE_COLUMNS)
            rows.append([name, row.scope, *amounts])
    if not rows:
        raise click.ClickException("no budgets found (create them with `flask cycles provision`)")
    header = ["TENANT", "SCOPE", *(c.upper() for c in BALANCE_COLUMNS)]
    click.echo(render_table(header, rows))
    keys = key_expiry.check(app_settings(app), key_expiry.now(app))
    for problem in (*keys.expired, *keys.expiring):
        click.echo(f"Warning: {problem}", err=True)


@group.command("check-keys", short_help="Show when the app's Cycles API keys end.")
def check_keys() -> None:
    """Show when each Cycles runtime key of the app ends, as CYCLES_KEY_EXPIRES_AT records it
    (`flask cycles provision` writes it); exit 1 when a key has ended or ends within
    CYCLES_KEY_WARN_DAYS days."""
    app = current_app
    settings, now = app_settings(app), key_expiry.now(app)
    for cycles_tenant in dict.fromkeys(
        tenancy.cycles_tenant(settings, tenant) for tenant in settings.tenants
    ):
        expires_at = settings.cycles_key_expires_at.get(cycles_tenant)
        shown = (
            key_expiry.describe(expires_at, now)
            if expires_at is not None
            else "expiry not recorded (CYCLES_KEY_EXPIRES_AT)"
        )
        click.echo(f"api key for {cycles_tenant}: {shown}")
    found = key_expiry.check(settings, now)
    if found.expired or found.expiring:
        raise click.ClickException(" ".join((*found.expired, *found.expiring)))
