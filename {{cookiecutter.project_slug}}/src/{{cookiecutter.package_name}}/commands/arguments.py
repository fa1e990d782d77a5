"""Command-line arguments of ``flask cycles`` and ``flask tenants``, checked: one clear line
naming the argument when one is wrong.
"""

from __future__ import annotations

import click
from flask import Flask

from ..config import TENANT_ID_RE, TENANT_ID_RULE, app_settings
from ..money import usd_to_microcents


def check_tenant_id(tenant: str) -> str:
    if not TENANT_ID_RE.fullmatch(tenant):
        raise click.BadParameter(f"{tenant!r}: expected {TENANT_ID_RULE}", param_hint="TENANT")
    return tenant


def app_tenant(app: Flask, tenant: str) -> str:
    """``tenant`` if the app serves it (the app holds runtime keys only for those)."""
    served = app_settings(app).tenants
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
