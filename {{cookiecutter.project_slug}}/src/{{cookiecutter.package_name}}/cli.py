"""``flask cycles ...``: provision Cycles through its admin API and show balances.

Requests have exactly the reference admin API's shapes (cycles-server-admin, port 7979):
the operator's ``X-Admin-API-Key`` creates tenants and API keys, and creates and funds
budgets on behalf of a tenant (``tenant_id`` in the body, or the query for funding). So
the same commands provision the embedded development ledger and a real Cycles stack.
Balances come from the Cycles server with the app's own runtime keys: what the app sees.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
import httpx
from flask import Flask, current_app
from flask.cli import AppGroup

from .config import (
    TENANT_AUTH,
    TENANT_ID_RE,
    TENANT_ID_RULE,
    TENANT_ISOLATION,
    Settings,
    hash_api_key,
)

UNIT = "USD_MICROCENTS"
MICROCENTS_PER_USD = 100_000_000
# What the app's runtime key may do: the reference server's default permissions.
RUNTIME_PERMISSIONS = [
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
]
HTTP_TIMEOUT_S = 10.0

Json = dict[str, Any]

cycles = AppGroup("cycles", help="Provision Cycles tenants, keys and budgets; show balances.")
tenants = AppGroup("tenants", help="Manage the callers of this API.")


def init_app(app: Flask) -> None:
    app.cli.add_command(cycles)
    if TENANT_AUTH == "api_key":
        app.cli.add_command(tenants)


@dataclass(frozen=True)
class Endpoint:
    """A Cycles HTTP API (admin or runtime) and the header that authenticates to it."""

    url: str
    headers: Mapping[str, str]

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        params: Mapping[str, str] | None = None,
        accept: Iterable[int] = (200, 201),
    ) -> tuple[int, Json]:
        """Send one request; any failure becomes a one-line error, never a traceback."""
        where = f"{method} {self.url}{path}"
        try:
            response = httpx.request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers=dict(self.headers),
                timeout=HTTP_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise click.ClickException(f"{where}: cannot reach the server ({exc})") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        if response.status_code not in accept:
            error = payload.get("error") or response.reason_phrase
            message = payload.get("message") or response.text[:200]
            raise click.ClickException(
                f"{where} failed: HTTP {response.status_code} {error}: {message}"
            )
        return response.status_code, payload


# --- where things are ----------------------------------------------------------------


def get_settings(app: Flask) -> Settings:
    # Read from the app, not imported from the package: the factory imports this module.
    settings: Settings = app.extensions["settings"]
    return settings


def _local_server(app: Flask) -> Any:
    """The embedded ledger this process started (development), or a clear error."""
    server = app.extensions.get("cycles_local_server")
    if server is None:
        raise click.ClickException("the embedded Cycles ledger is not running in this process")
    return server


def admin_endpoint(app: Flask) -> Endpoint:
    settings = get_settings(app)
    if settings.cycles_admin_url:
        if not settings.cycles_admin_api_key:
            raise click.ClickException("CYCLES_ADMIN_API_KEY is not set (the admin server's key)")
        url, key = settings.cycles_admin_url, settings.cycles_admin_api_key
    elif settings.uses_local_cycles:
        server = _local_server(app)
        url, key = server.base_url, server.admin_key
    else:
        raise click.ClickException(
            "CYCLES_ADMIN_URL is not set: the Cycles admin server, e.g. http://cycles-admin:7979"
        )
    return Endpoint(url.rstrip("/"), {"X-Admin-API-Key": key})


def runtime_endpoint(app: Flask, tenant: str) -> Endpoint:
    """The Cycles server with the runtime key the app uses for ``tenant``."""
    settings = get_settings(app)
    if settings.uses_local_cycles:
        server = _local_server(app)
        return Endpoint(server.base_url, {"X-Cycles-API-Key": server.api_key_for(tenant)})
    if TENANT_ISOLATION == "workspace":
        key = settings.cycles_api_key
    else:
        key = settings.cycles_tenant_api_keys.get(tenant)
    if not key:
        raise click.ClickException(f"no Cycles API key is configured for tenant {tenant!r}")
    return Endpoint(settings.cycles_base_url, {"X-Cycles-API-Key": key})


def cycles_tenant(settings: Settings, tenant: str) -> str:
    """The Cycles tenant that holds ``tenant``'s budget in this project's isolation mode."""
    return settings.cycles_tenant if TENANT_ISOLATION == "workspace" else tenant


def budget_scope(settings: Settings, tenant: str) -> str:
    if TENANT_ISOLATION == "workspace":
        return f"tenant:{settings.cycles_tenant}/workspace:{tenant}"
    return f"tenant:{tenant}"


# --- amounts ---------------------------------------------------------------------------


def usd_to_microcents(text: str) -> int:
    try:
        value = Decimal(text) * MICROCENTS_PER_USD
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount of US dollars like 5.00") from None
    if value < 0 or value != value.to_integral_value():
        raise click.BadParameter(f"{text!r}: expected dollars >= 0 with at most 8 decimals")
    return int(value)


def format_amount(amount: object) -> str:
    if not isinstance(amount, dict):
        return "-"
    value, unit = int(amount.get("amount", 0)), amount.get("unit", UNIT)
    if unit != UNIT:
        return f"{value} {unit}"
    dollars = Decimal(value) / MICROCENTS_PER_USD
    # Whole cents read as money; smaller fractions keep every significant digit.
    shown = f"{dollars:.2f}" if dollars == round(dollars, 2) else f"{dollars.normalize():f}"
    return f"${shown}"


def amount(microcents: int) -> Json:
    return {"amount": microcents, "unit": UNIT}


# --- env files ---------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, raw = line.strip().partition("=")
        if sep and not name.startswith("#"):
            parts = shlex.split(raw)
            values[name.strip()] = parts[0] if parts else ""
    return values


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    # Written to a temporary name and renamed: a half-written file never looks complete.
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.chmod(0o600)  # it holds API keys
    tmp.replace(path)


# --- provisioning ----------------------------------------------------------------------


def create_tenant(admin: Endpoint, tenant_id: str) -> None:
    status, _ = admin.call(
        "POST", "/v1/admin/tenants", body={"tenant_id": tenant_id, "name": tenant_id}
    )
    click.echo(f"tenant {tenant_id}: {'created' if status == 201 else 'exists'}")


def create_api_key(admin: Endpoint, tenant_id: str, name: str) -> str:
    _, key = admin.call(
        "POST",
        "/v1/admin/api-keys",
        body={"tenant_id": tenant_id, "name": name, "permissions": RUNTIME_PERMISSIONS},
    )
    secret = key.get("key_secret")
    if not isinstance(secret, str) or not secret:
        raise click.ClickException(f"the admin API returned no key_secret for {tenant_id!r}")
    click.echo(f"api key for {tenant_id}: created {key.get('key_prefix', '')}...")
    return secret


def create_budget(admin: Endpoint, tenant_id: str, scope: str, microcents: int) -> None:
    status, payload = admin.call(
        "POST",
        "/v1/admin/budgets",
        body={
            "tenant_id": tenant_id,
            "scope": scope,
            "unit": UNIT,
            "allocated": amount(microcents),
        },
        accept=(201, 409),
    )
    if status == 409 and payload.get("error") != "DUPLICATE_RESOURCE":
        raise click.ClickException(
            f"budget {scope}: HTTP 409 {payload.get('error')}: {payload.get('message')}"
        )
    # An existing budget is left as it is: re-running provisioning never resets spend.
    result = "created" if status == 201 else "exists (unchanged)"
    click.echo(f"budget {scope}: {result}")


def provision_keys(
    admin: Endpoint, settings: Settings, names: Sequence[str], known: Mapping[str, str]
) -> dict[str, str]:
    """Create the Cycles tenants and runtime keys; return the settings that carry the keys."""
    app_name = settings.cycles_app
    if TENANT_ISOLATION == "workspace":
        create_tenant(admin, settings.cycles_tenant)
        key = known.get("CYCLES_API_KEY") or create_api_key(admin, settings.cycles_tenant, app_name)
        return {"CYCLES_TENANT": settings.cycles_tenant, "CYCLES_API_KEY": key}
    keys = dict(
        item.split("=", 1) for item in known.get("CYCLES_TENANT_API_KEYS", "").split(",") if item
    )
    for name in names:
        create_tenant(admin, name)
        keys[name] = keys.get(name) or create_api_key(admin, name, app_name)
    return {"CYCLES_TENANT_API_KEYS": ",".join(f"{t}={k}" for t, k in keys.items())}


@cycles.command("provision")
@click.argument("tenant_ids", metavar="[TENANT]...", nargs=-1)
@click.option(
    "--budget-usd",
    default="5.00",
    show_default=True,
    envvar="CYCLES_BOOTSTRAP_BUDGET_USD",
    help="Allocation of each new budget, in US dollars.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the runtime keys in this file: reused when present, written when created.",
)
def provision(tenant_ids: tuple[str, ...], budget_usd: str, env_file: Path | None) -> None:
    """Create Cycles tenants, runtime API keys and budgets (default: every app tenant).

    Safe to re-run: existing tenants and budgets are kept, and with --env-file so are keys.
    Prints the settings the app needs to reach its budgets.
    """
    settings = get_settings(current_app)
    admin = admin_endpoint(current_app)
    microcents = usd_to_microcents(budget_usd)
    names = tenant_ids or settings.tenants
    for name in names:
        if not TENANT_ID_RE.fullmatch(name):
            raise click.BadParameter(f"{name!r} is not a valid tenant id", param_hint="TENANT")
    known = read_env_file(env_file) if env_file else {}
    values = provision_keys(admin, settings, names, known)
    for name in names:
        create_budget(
            admin, cycles_tenant(settings, name), budget_scope(settings, name), microcents
        )
    if env_file:
        write_env_file(env_file, {**known, **values})
        click.echo(f"settings written to {env_file}")
    else:
        click.echo("\nAdd to the app's environment (keep it secret):")
        for key, value in values.items():
            click.echo(f"{key}={value}")


@cycles.command("fund")
@click.argument("tenant")
@click.argument("usd")
@click.option("--reason", default="manual top-up", show_default=True)
def fund(tenant: str, usd: str, reason: str) -> None:
    """Add USD (e.g. 10.00) to TENANT's budget (a CREDIT funding operation)."""
    settings = get_settings(current_app)
    scope = budget_scope(settings, tenant)
    _, result = admin_endpoint(current_app).call(
        "POST",
        "/v1/admin/budgets/fund",
        params={"tenant_id": cycles_tenant(settings, tenant), "scope": scope, "unit": UNIT},
        body={"operation": "CREDIT", "amount": amount(usd_to_microcents(usd)), "reason": reason},
    )
    click.echo(f"{scope}: remaining {format_amount(result.get('new_remaining'))}")


BALANCE_COLUMNS = ("allocated", "spent", "reserved", "debt", "remaining")


def balance_rows(tenant: str, balances: Iterable[object]) -> list[list[str]]:
    rows = []
    for balance in balances:
        if isinstance(balance, dict):
            scope = str(balance.get("scope_path") or balance.get("scope", "?"))
            rows.append([tenant, scope, *(format_amount(balance.get(c)) for c in BALANCE_COLUMNS)])
    return rows


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


@cycles.command("balances")
@click.argument("tenant", required=False)
def balances(tenant: str | None) -> None:
    """Show the Cycles balances of TENANT (default: every tenant of the app)."""
    settings = get_settings(current_app)
    rows: list[list[str]] = []
    for name in [tenant] if tenant else settings.tenants:
        params = {"tenant": cycles_tenant(settings, name)}
        if TENANT_ISOLATION == "workspace":
            params["workspace"] = name
        _, payload = runtime_endpoint(current_app, name).call("GET", "/v1/balances", params=params)
        rows.extend(balance_rows(name, payload.get("balances") or []))
    if not rows:
        raise click.ClickException("no budgets found (create them with `flask cycles provision`)")
    header = ["TENANT", "SCOPE", *(c.upper() for c in BALANCE_COLUMNS)]
    click.echo(render_table(header, rows))


@tenants.command("new-key")
@click.argument("tenant")
def new_key(tenant: str) -> None:
    """Print a fresh random API key for TENANT and its TENANT_API_KEYS entry."""
    if not TENANT_ID_RE.fullmatch(tenant):
        raise click.BadParameter(f"expected {TENANT_ID_RULE}", param_hint="TENANT")
    key = secrets.token_urlsafe(32)
    click.echo(f"API key for {tenant} (give it to the caller; it is not stored): {key}")
    click.echo("Add this entry to TENANT_API_KEYS (comma-separated tenant=sha256 pairs):")
    click.echo(f"{tenant}={hash_api_key(key)}")
