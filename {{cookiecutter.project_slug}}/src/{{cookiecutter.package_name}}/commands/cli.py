"""``flask cycles ...``: provision Cycles and show balances; ``flask tenants ...``: callers.

Provisioning goes through the Cycles admin API (admin_api.py), so the same commands set up
the embedded development ledger and a real Cycles stack. Where an app tenant's budget lives
is the app's own answer (cycles_tenancy.py), and balances are read by the app's own code
with its own runtime keys: what the app sees. Runtime keys end (key_expiry.py): provision
gives each an explicit lifetime, records its end, and rotates one that is near it;
``check-keys`` tells how long each has left.
"""

from __future__ import annotations

{% if cookiecutter.tenant_auth == "api_key" -%}
import secrets
{% endif -%}
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .. import state
from ..budget.pricing import format_usd, usd_to_microcents
from ..config import TENANT_ID_RE, TENANT_ID_RULE{% if cookiecutter.tenant_auth == "api_key" %}, hash_api_key{% endif %}
from ..cycles import clients as cycles_clients
from ..cycles import key_expiry
from ..cycles import tenancy as cycles_tenancy
from ..cycles.admin_api import (
    Endpoint,
    RuntimeKey,
    create_api_key,
    create_budget,
    create_tenant,
    fund_budget,
    key_prefix,
    key_works,
    validate_key,
)
from ..cycles.embedded_ledger import EmbeddedCycles
from ..errors import ApiError
from .keys_file import read_keys_file, recorded_expiries, recorded_keys, write_keys_file

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


@dataclass(frozen=True)
class Recorded:
    """What a keys file holds: runtime keys and their expiries, by Cycles tenant."""

    keys: Mapping[str, str]
    expiries: Mapping[str, datetime]


def key_candidates(
    app: Flask, cycles_tenant: str, recorded: Recorded, *, with_app_keys: bool
) -> list[tuple[str, datetime | None]]:
    """Keys that may be ``cycles_tenant``'s, best first, with the expiry recorded for each:
    the keys file's, then (``with_app_keys``) the app's own as its settings record it, then
    any other."""
    settings = state.settings(app)
    ranked = [(recorded.keys.get(cycles_tenant), recorded.expiries.get(cycles_tenant))]
    if with_app_keys:
        # The app's own key of that Cycles tenant, in either isolation mode (the settings
        # of the other mode are empty); in development it may have none.
        own = settings.cycles_tenant_api_keys.get(cycles_tenant) or (
            settings.cycles_api_key if cycles_tenant == settings.cycles_tenant else None
        )
        ranked.append((own, settings.cycles_key_expires_at.get(cycles_tenant)))
    others = [*recorded.keys.values(), *(app_keys(app) if with_app_keys else [])]
    found: dict[str, datetime | None] = {}
    for key, expires_at in [*ranked, *((key, None) for key in others)]:
        if key:
            found[key] = found.get(key) or expires_at
    return list(found.items())


def existing_key(
    app: Flask, admin: Endpoint, cycles_tenant: str, recorded: Recorded
) -> RuntimeKey | None:
    """A runtime key of ``cycles_tenant`` that works already, and when it ends.

    The admin API says whether a key is valid, whose it is and when it ends (the reference's
    ``POST /v1/auth/validate``). An admin API without it: a runtime call tells whether the
    key works and the recorded expiry is taken; with no runtime server to ask either (the
    compose bootstrap), the keys file's key is taken on trust. The app's own keys are
    candidates only where they are the admin server's (not the bootstrap's embedded
    ledger's: the reference would log each as a failed authentication).
    """
    url = key_check_url(app)
    candidates = key_candidates(app, cycles_tenant, recorded, with_app_keys=url is not None)
    admin_knows = True  # until the admin API turns out not to have the lookup
    for position, (key, recorded_expiry) in enumerate(candidates):
        status = validate_key(admin, key) if admin_knows else None
        if status is not None:
            if status.valid and status.tenant_id == cycles_tenant:
                return RuntimeKey(key, status.expires_at)
            continue
        admin_knows = False
        if url is None:
            trusted = position == 0 and recorded.keys.get(cycles_tenant) == key
        else:
            trusted = key_works(url, key, cycles_tenant)
        if trusted:
            return RuntimeKey(key, recorded_expiry)
    return None


# --- provisioning ----------------------------------------------------------------------


def runtime_key(
    app: Flask, admin: Endpoint, cycles_tenant: str, recorded: Recorded, rotate: bool
) -> RuntimeKey:
    """``cycles_tenant``'s runtime key: a working one reused, else new. A key within
    CYCLES_KEY_WARN_DAYS of its end is rotated, and --rotate-keys rotates any."""
    settings, now = state.settings(app), state.now(app)
    label = f"api key for {cycles_tenant}"
    found = None if rotate else existing_key(app, admin, cycles_tenant, recorded)
    due = found is not None and key_expiry.is_due(
        found.expires_at, now, settings.cycles_key_warn_days
    )
    if found is not None and not due:
        ends = key_expiry.describe(found.expires_at, now)
        click.echo(f"{label}: exists (reused) {key_prefix(found.secret)} {ends}")
        return found
    expires_at = key_expiry.expiry_after(now, settings.cycles_key_ttl_days)
    key = create_api_key(admin, cycles_tenant, settings.cycles_app, expires_at)
    created = f"created {key_prefix(key.secret)} {key_expiry.describe(key.expires_at, now)}"
    if found is not None:
        old = f"{key_prefix(found.secret)} {key_expiry.describe(found.expires_at, now)}"
        click.echo(
            f"{label}: {old}, within CYCLES_KEY_WARN_DAYS={settings.cycles_key_warn_days}: "
            f"rotated: {created}; the previous key works until it expires"
        )
    elif rotate:
        click.echo(
            f"{label}: rotated: {created}; the previous key keeps working until it expires "
            "or you revoke it in the Cycles admin API"
        )
    else:
        click.echo(f"{label}: {created}")
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
    runtime key that still works (from --keys-file or the app's settings) unless it ends
    within CYCLES_KEY_WARN_DAYS: that one is rotated; --rotate-keys rotates every key. New
    keys live CYCLES_KEY_TTL_DAYS. Prints the settings that give the app its keys and their
    expiry (CYCLES_KEY_EXPIRES_AT), or writes them to --keys-file.
    """
    app = current_app
    microcents = dollars(budget_usd)
    names = [check_tenant_id(name) for name in tenant_ids] or list(state.settings(app).tenants)
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
    for home in homes:
        create_budget(admin, home.cycles_tenant, home.scope, microcents)
    # Keys of tenants not provisioned this time stay in the file as they were.
    secrets_by_tenant = {tenant: key.secret for tenant, key in keys.items()}
    values = cycles_tenancy.key_settings(
        state.settings(app), {**recorded.keys, **secrets_by_tenant}
    )
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


@cycles.command("fund", short_help="Add US dollars to a tenant's budget.")
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
    keys = key_expiry.check(state.settings(app), state.now(app))
    for problem in (*keys.expired, *keys.expiring):
        click.echo(f"Warning: {problem}", err=True)


@cycles.command("check-keys", short_help="Show when the app's Cycles API keys end.")
def check_keys() -> None:
    """Show when each Cycles runtime key of the app ends, as CYCLES_KEY_EXPIRES_AT records it
    (`flask cycles provision` writes it); exit 1 when a key has ended or ends within
    CYCLES_KEY_WARN_DAYS days."""
    app = current_app
    settings, now = state.settings(app), state.now(app)
    for cycles_tenant in dict.fromkeys(
        cycles_tenancy.cycles_tenant(settings, tenant) for tenant in settings.tenants
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
