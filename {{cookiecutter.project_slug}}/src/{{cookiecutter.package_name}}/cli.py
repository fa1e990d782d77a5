"""``flask cycles ...``: provision Cycles and show balances; ``flask tenants ...``: callers.

Provisioning goes through the Cycles admin API (admin_api.py), so the same commands set up
the embedded development ledger and a real Cycles stack. Where an app tenant's budget lives
is the app's own answer (cycles_tenancy.py), and balances are read by the app's own code
with its own runtime keys: what the app sees.
"""

from __future__ import annotations

{% if cookiecutter.tenant_auth == "api_key" -%}
import secrets
{% endif -%}
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import cycles_clients, cycles_tenancy, state
from .admin_api import Endpoint, create_api_key, create_budget, create_tenant, key_works
from .config import TENANT_ID_RE, TENANT_ID_RULE{% if cookiecutter.tenant_auth == "api_key" %}, hash_api_key{% endif %}
from .embedded_ledger import EmbeddedCycles
from .errors import ApiError
from .keys_file import read_keys_file, recorded_keys, write_keys_file
from .pricing import UNIT, format_usd, usd_to_microcents

cycles = AppGroup("cycles", help="Provision Cycles tenants, keys and budgets; show balances.")
{%- if cookiecutter.tenant_auth == "api_key" %}
tenants = AppGroup("tenants", help="Manage the callers of this API.")
{%- endif %}


def init_app(app: Flask) -> None:
    app.cli.add_command(cycles)
{%- if cookiecutter.tenant_auth == "api_key" %}
    app.cli.add_command(tenants)
{%- endif %}


# --- where things are ----------------------------------------------------------------


def _local_server(app: Flask) -> EmbeddedCycles:
    """The embedded ledger this process started (development), or a clear error."""
    server = cycles_clients.local_server(app)
    if server is None:
        raise click.ClickException("the embedded Cycles ledger is not running in this process")
    return server


def admin_endpoint(app: Flask) -> Endpoint:
    settings = state.settings(app)
    if settings.cycles_admin_url:
        if not settings.cycles_admin_api_key:
            raise click.ClickException("CYCLES_ADMIN_API_KEY is not set (the admin server's key)")
        url, key = settings.cycles_admin_url, settings.cycles_admin_api_key
    elif settings.uses_local_cycles and _local_server(app).admin_key:
        server = _local_server(app)
        url, key = server.base_url, str(server.admin_key)
    else:
        raise click.ClickException(
            "CYCLES_ADMIN_URL is not set: the Cycles admin server, e.g. http://cycles-admin:7979"
        )
    return Endpoint(url.rstrip("/"), {"X-Admin-API-Key": key})


def runtime_url(app: Flask) -> str:
    settings = state.settings(app)
    url = _local_server(app).base_url if settings.uses_local_cycles else settings.cycles_base_url
    return str(url).rstrip("/")


@dataclass(frozen=True)
class BudgetHome:
    """Where an app tenant's budget lives in Cycles."""

    cycles_tenant: str  # the Cycles tenant that owns the budget (and the runtime key)
    scope: str  # the budget's scope: the subject's tenant (and workspace) level


def budget_home(app: Flask, tenant: str) -> BudgetHome:
    """Where the app spends ``tenant``'s calls from (cycles_tenancy.py decides)."""
    settings = state.settings(app)
    return BudgetHome(
        cycles_tenancy.cycles_tenant(settings, tenant),
        cycles_tenancy.budget_scope(settings, tenant),
    )


def check_tenant_id(tenant: str) -> str:
    if not TENANT_ID_RE.fullmatch(tenant):
        raise click.BadParameter(f"{tenant!r}: expected {TENANT_ID_RULE}", param_hint="TENANT")
    return tenant


def app_tenant(app: Flask, tenant: str) -> str:
    """``tenant`` if the app serves it (the app holds runtime keys only for those)."""
    served = state.settings(app).tenants
    if tenant not in served:
        raise click.ClickException(
            f"{tenant!r} is not a tenant of this app (it serves: {', '.join(served)}); "
            "add it to the app's tenant settings first"
        )
    return tenant


def dollars(text: str, *, positive: bool = False) -> int:
    """A command-line amount of US dollars as microcents, or a usage error."""
    try:
        microcents = usd_to_microcents(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if positive and microcents == 0:
        raise click.BadParameter(f"{text!r}: the amount must be more than $0")
    return microcents


def key_check_url(app: Flask) -> str | None:
    """The runtime server that shares keys with the admin API in use, if there is one to ask.

    The embedded ledger serves both; an admin server goes with ``CYCLES_BASE_URL``, unless
    that is the embedded ledger (the compose bootstrap), whose keys are another ledger's.
    """
    settings = state.settings(app)
    if settings.cycles_admin_url:
        return None if settings.uses_local_cycles else settings.cycles_base_url.rstrip("/")
    return runtime_url(app)


def app_keys(app: Flask) -> list[str]:
    """The runtime keys the app is configured with (or the embedded ledger gave it)."""
    settings = state.settings(app)
    found = [settings.cycles_api_key or "", *settings.cycles_tenant_api_keys.values()]
    if settings.uses_local_cycles:
        found += [_local_server(app).api_key_for(tenant) for tenant in settings.tenants]
    return found


def existing_key(app: Flask, cycles_tenant: str, recorded: Mapping[str, str]) -> str | None:
    """A runtime key of ``cycles_tenant`` that exists already: the keys file's or the app's
    own, if the Cycles server takes it (with no server to ask, the keys file's)."""
    url = key_check_url(app)
    if url is None:
        return recorded.get(cycles_tenant)
    candidates = [recorded.get(cycles_tenant, ""), *recorded.values(), *app_keys(app)]
    for key in dict.fromkeys(key for key in candidates if key):
        if key_works(url, key, cycles_tenant):
            return key
    return None


# --- provisioning ----------------------------------------------------------------------


def runtime_key(
    app: Flask, admin: Endpoint, cycles_tenant: str, recorded: Mapping[str, str], rotate: bool
) -> str:
    """``cycles_tenant``'s runtime key: an existing one reused, else (or if rotating) new."""
    existing = None if rotate else existing_key(app, cycles_tenant, recorded)
    if existing is not None:
        click.echo(f"api key for {cycles_tenant}: exists (reused)")
        return existing
    key = create_api_key(admin, cycles_tenant, state.settings(app).cycles_app)
    if rotate:
        click.echo(
            f"api key for {cycles_tenant}: rotated: created {key[:8]}...; the previous key "
            "keeps working until you revoke it in the Cycles admin API"
        )
    else:
        click.echo(f"api key for {cycles_tenant}: created {key[:8]}...")
    return key


@cycles.command("provision", short_help="Create tenants, runtime keys and budgets.")
@click.argument("tenant_ids", metavar="[TENANT]...", nargs=-1)
@click.option(
    "--budget-usd",
    default="5.00",
    show_default=True,
    envvar="CYCLES_BOOTSTRAP_BUDGET_USD",
    help="Allocation of each new budget, in US dollars.",
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

    Safe to re-run: existing tenants, budgets (and their spend) are kept, and so is any
    runtime key that still works (from --keys-file or the app's settings); --rotate-keys
    makes new ones. Prints the settings that give the app its keys, or writes them to
    --keys-file.
    """
    app = current_app
    microcents = dollars(budget_usd)
    names = [check_tenant_id(name) for name in tenant_ids] or list(state.settings(app).tenants)
    admin = admin_endpoint(app)
    known = read_keys_file(keys_file) if keys_file else {}
    recorded = recorded_keys(known)
    homes = [budget_home(app, name) for name in names]
    keys: dict[str, str] = {}
    for home in homes:
        if home.cycles_tenant not in keys:
            create_tenant(admin, home.cycles_tenant)
            keys[home.cycles_tenant] = runtime_key(
                app, admin, home.cycles_tenant, recorded, rotate_keys
            )
    for home in homes:
        create_budget(admin, home.cycles_tenant, home.scope, microcents)
    # Keys of tenants not provisioned this time stay in the file as they were.
    values = cycles_tenancy.key_settings(state.settings(app), {**recorded, **keys})
    if keys_file:
        write_keys_file(keys_file, {**known, **values})
        click.echo(f"settings written to {keys_file}")
    else:
        click.echo("\nThe app's environment needs (keep it secret):")
        for name, value in values.items():
            click.echo(f"{name}={value}")


@cycles.command("fund", short_help="Add US dollars to a tenant's budget.")
@click.argument("tenant")
@click.argument("usd")
@click.option("--reason", default="manual top-up", show_default=True)
def fund(tenant: str, usd: str, reason: str) -> None:
    """Add USD (more than 0, like 10.00) to TENANT's budget: a CREDIT funding operation."""
    app = current_app
    microcents = dollars(usd, positive=True)
    home = budget_home(app, check_tenant_id(tenant))
    _, result = admin_endpoint(app).call(
        "POST",
        "/v1/admin/budgets/fund",
        params={"tenant_id": home.cycles_tenant, "scope": home.scope, "unit": UNIT},
        body={
            "operation": "CREDIT",
            "amount": {"amount": microcents, "unit": UNIT},
            "reason": reason,
        },
    )
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


@cycles.command("balances", short_help="Show the tenants' budgets as the app sees them.")
@click.argument("tenant", required=False)
def balances(tenant: str | None) -> None:
    """Show the Cycles balances of TENANT (default: every tenant of the app), read with the
    app's own runtime keys."""
    app = current_app
    names = [app_tenant(app, check_tenant_id(tenant))] if tenant else state.settings(app).tenants
    rows: list[list[str]] = []
    for name in names:
        try:
            found = state.cycles(app).balances(name)
        except ApiError as exc:
            raise click.ClickException(f"cannot read {name}'s balances: {exc.message}") from None
        for row in found:
            amounts = (format_usd(getattr(row, column)) for column in BALANCE_COLUMNS)
            rows.append([name, row.scope, *amounts])
    if not rows:
        raise click.ClickException("no budgets found (create them with `flask cycles provision`)")
    header = ["TENANT", "SCOPE", *(c.upper() for c in BALANCE_COLUMNS)]
    click.echo(render_table(header, rows))
{%- if cookiecutter.tenant_auth == "api_key" %}


@tenants.command("new-key", short_help="Make an API key for a caller.")
@click.argument("tenant")
def new_key(tenant: str) -> None:
    """Print a fresh random API key for TENANT and its TENANT_API_KEYS entry."""
    check_tenant_id(tenant)
    key = secrets.token_urlsafe(32)
    click.echo(f"API key for {tenant} (give it to the caller; it is not stored): {key}")
    click.echo("Add this entry to TENANT_API_KEYS (comma-separated tenant=sha256 pairs):")
    click.echo(f"{tenant}={hash_api_key(key)}")
{%- endif %}
