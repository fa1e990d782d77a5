"""The runtime API keys ``flask cycles provision`` gives the app: reuse one that works, make
one where there is none, rotate one near its end (cycles/key_expiry.py).

A key is looked for in the keys file first, then among the app's own keys; the admin API
says whether it is valid and whose it is where it can (``POST /v1/auth/validate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import click
from flask import Flask

from ..config import app_settings
from ..cycles import key_expiry
from ..cycles.admin_api import (
    Endpoint,
    RuntimeKey,
    create_api_key,
    key_prefix,
    key_works,
    validate_key,
)
from .endpoints import local_server, runtime_url


def key_check_url(app: Flask) -> str | None:
    """The runtime server that shares keys with the admin API in use, if there is one to ask.

    The embedded ledger serves both; an admin server goes with ``CYCLES_BASE_URL``, unless
    that is the embedded ledger (the compose bootstrap), whose keys are another ledger's.
    """
    settings = app_settings(app)
    if settings.cycles_admin_url:
        return None if settings.uses_local_cycles else settings.cycles_base_url.rstrip("/")
    return runtime_url(app)


def app_keys(app: Flask) -> list[str]:
    """The runtime keys the app is configured with (or the embedded ledger gave it)."""
    settings = app_settings(app)
    found = [settings.cycles_api_key or "", *settings.cycles_tenant_api_keys.values()]
    if settings.uses_local_cycles:
        found += [local_server(app).api_key_for(tenant) for tenant in settings.tenants]
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
    settings = app_settings(app)
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


def runtime_key(
    app: Flask, admin: Endpoint, cycles_tenant: str, recorded: Recorded, rotate: bool
) -> RuntimeKey:
    """``cycles_tenant``'s runtime key: a working one reused, else new. A key within
    CYCLES_KEY_WARN_DAYS of its end is rotated, and --rotate-keys rotates any."""
    settings, now = app_settings(app), key_expiry.now(app)
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
