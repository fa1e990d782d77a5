"""Where ``flask cycles`` finds things: the Cycles admin and runtime servers, and where an app
tenant's budget lives (the app's own answer, cycles/tenancy.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from flask import Flask

from ..config import app_settings
from ..cycles import clients, tenancy
from ..cycles.admin_api import Endpoint
from ..cycles.embedded_ledger import EmbeddedCycles


def local_server(app: Flask) -> EmbeddedCycles:
    """The embedded ledger this process started (development), or a clear error."""
    server = clients.local_server(app)
    if server is None:
        raise click.ClickException("the embedded Cycles ledger is not running in this process")
    return server


def admin_endpoint(app: Flask) -> Endpoint:
    settings = app_settings(app)
    if settings.cycles_admin_url:
        if not settings.cycles_admin_api_key:
            raise click.ClickException("CYCLES_ADMIN_API_KEY is not set (the admin server's key)")
        url, key = settings.cycles_admin_url, settings.cycles_admin_api_key
    elif settings.uses_local_cycles and local_server(app).admin_key:
        server = local_server(app)
        url, key = server.base_url, str(server.admin_key)
    else:
        raise click.ClickException(
            "CYCLES_ADMIN_URL is not set: the Cycles admin server, e.g. http://cycles-admin:7979"
        )
    return Endpoint(url.rstrip("/"), {"X-Admin-API-Key": key})


def runtime_url(app: Flask) -> str:
    settings = app_settings(app)
    url = local_server(app).base_url if settings.uses_local_cycles else settings.cycles_base_url
    return str(url).rstrip("/")


@dataclass(frozen=True)
class BudgetHome:
    """Where an app tenant's budget lives in Cycles."""

    cycles_tenant: str  # the Cycles tenant that owns the budget (and the runtime key)
    scope: str  # the budget's scope: the subject's tenant (and workspace) level


def budget_home(app: Flask, tenant: str) -> BudgetHome:
    """Where the app spends ``tenant``'s calls from (tenancy.py decides)."""
    settings = app_settings(app)
    return BudgetHome(
        tenancy.cycles_tenant(settings, tenant),
        tenancy.budget_scope(settings, tenant),
    )
