"""API key permissions, as the reference servers define and check them.

Two planes, two rules (cycles-server and cycles-server-admin):

* Runtime plane (reserve, commit, release, extend, list/get reservations, decide, events,
  balances): the key must be valid (active, not expired, its tenant active) and is scoped to
  its tenant, but no permission name is checked. A key with an empty list may do all of it.
* Admin plane (``/v1/admin/budgets...`` under a tenant key): the key's list must hold the
  permission the endpoint requires, else 403 ``INSUFFICIENT_PERMISSIONS``. ``admin:read`` /
  ``admin:write`` satisfy any ``*:read`` / ``*:write`` (the reference's wildcards).

Permission names are a closed set; creating a key with any other name is a 400.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

#: Every permission name the reference admin API accepts (its ``Permission`` enum).
PERMISSIONS: frozenset[str] = frozenset(
    {
        "reservations:create",
        "reservations:commit",
        "reservations:release",
        "reservations:extend",
        "reservations:list",
        "balances:read",
        "budgets:read",
        "budgets:write",
        "policies:read",
        "policies:write",
        "webhooks:read",
        "webhooks:write",
        "events:read",
        "admin:read",
        "admin:write",
        "admin:tenants:read",
        "admin:tenants:write",
        "admin:budgets:read",
        "admin:budgets:write",
        "admin:policies:read",
        "admin:policies:write",
        "admin:apikeys:read",
        "admin:apikeys:write",
        "admin:webhooks:read",
        "admin:webhooks:write",
        "admin:events:read",
        "admin:audit:read",
    }
)

#: What a key created without a list gets (the reference's default): the runtime's own
#: names, and no budget administration.
RUNTIME_PERMISSIONS: tuple[str, ...] = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
)

#: (method, route) -> the permission a tenant key needs on the admin plane. Runtime routes
#: are absent on purpose: the runtime server checks no permission names.
REQUIRED: dict[tuple[str, str], str] = {
    ("POST", "/v1/admin/budgets"): "budgets:write",
    ("POST", "/v1/admin/budgets/fund"): "budgets:write",
    ("GET", "/v1/admin/budgets"): "budgets:read",
}


def allows(granted: Collection[str], required: str) -> bool:
    if required in granted:
        return True
    family = required.rpartition(":")[2]
    return family in ("read", "write") and f"admin:{family}" in granted


def unknown(names: Iterable[str]) -> str | None:
    """The first name that is not a known permission, or None."""
    return next((name for name in names if name not in PERMISSIONS), None)
