"""Who is calling: resolve the caller's tenant, or refuse with 401.

{%- if cookiecutter.tenant_auth == "api_key" %}
Callers send ``Authorization: Bearer <key>``; the app knows only SHA-256 digests of the
keys (``TENANT_API_KEYS``) and compares them in constant time.
{%- else %}
A gateway in front of the app authenticates callers and sets ``X-Tenant-ID``; the app
accepts only the tenants listed in ``TENANTS``. Never expose the app directly.
{%- endif %}
There is no default tenant: a request that names none is refused.
"""

from __future__ import annotations
{% if cookiecutter.tenant_auth == "api_key" %}
import hmac
{% endif %}
from flask import current_app, g, request

from .config import {% if cookiecutter.tenant_auth == "api_key" %}Settings, hash_api_key{% else %}TENANT_ID_RE, Settings{% endif %}
from .errors import ApiError

UNAUTHORIZED = "unauthorized"


def authenticate() -> None:
    """``before_request`` hook: put the caller's tenant in ``g.tenant`` or answer 401."""
    settings: Settings = current_app.extensions["settings"]
    g.tenant = resolve_tenant(settings)


def current_tenant() -> str:
    """The tenant :func:`authenticate` resolved for this request."""
    tenant: str = g.tenant
    return tenant
{%- if cookiecutter.tenant_auth == "api_key" %}


def resolve_tenant(settings: Settings) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, UNAUTHORIZED, "Send your API key as 'Authorization: Bearer <key>'.")
    tenant = _tenant_of_digest(settings, hash_api_key(key))
    if tenant is None:
        raise ApiError(401, UNAUTHORIZED, "The API key is not valid.")
    return tenant


def _tenant_of_digest(settings: Settings, digest: str) -> str | None:
    # Compare against every known digest, without stopping at a match, so the time taken
    # says nothing about which (or how much of a) key matched.
    found = None
    for known, tenant in settings.tenant_key_hashes.items():
        if hmac.compare_digest(known, digest):
            found = tenant
    return found
{%- else %}


def resolve_tenant(settings: Settings) -> str:
    tenant = request.headers.get("X-Tenant-ID", "").strip()
    if not tenant:
        raise ApiError(401, UNAUTHORIZED, "The X-Tenant-ID header is missing.")
    # Validate before the lookup so odd values never reach logs or Cycles scopes.
    if not TENANT_ID_RE.fullmatch(tenant) or tenant not in settings.tenants:
        raise ApiError(401, UNAUTHORIZED, "The X-Tenant-ID header names no known tenant.")
    return tenant
{%- endif %}
