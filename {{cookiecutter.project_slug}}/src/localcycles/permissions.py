"""API key permissions: what each endpoint requires, as the reference servers name them.

A tenant API key may call an endpoint only if its permission list holds the permission the
endpoint requires (403 FORBIDDEN otherwise); the admin key may call the admin endpoints.
``admin:read`` / ``admin:write`` grant every ``*:read`` / ``*:write`` permission, the
reference admin API's backward-compatible wildcards.
"""

from __future__ import annotations

from collections.abc import Collection

#: What a runtime key gets when no list is given: everything a guarded call needs (reserve,
#: commit, release, extend, list, balances, decide, events) and no budget administration.
RUNTIME_PERMISSIONS: tuple[str, ...] = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "decide",
    "events:create",
)

#: (method, route) -> the permission a tenant API key needs. Routes are the server's
#: patterns; ``{id}`` stands for a reservation id.
REQUIRED: dict[tuple[str, str], str] = {
    ("POST", "/v1/reservations"): "reservations:create",
    ("GET", "/v1/reservations"): "reservations:list",
    ("GET", "/v1/reservations/{id}"): "reservations:list",
    ("POST", "/v1/reservations/{id}/commit"): "reservations:commit",
    ("POST", "/v1/reservations/{id}/release"): "reservations:release",
    ("POST", "/v1/reservations/{id}/extend"): "reservations:extend",
    ("POST", "/v1/decide"): "decide",
    ("GET", "/v1/balances"): "balances:read",
    ("POST", "/v1/events"): "events:create",
    ("POST", "/v1/admin/budgets"): "budgets:write",
    ("POST", "/v1/admin/budgets/fund"): "budgets:write",
    ("GET", "/v1/admin/budgets"): "budgets:read",
}


def allows(granted: Collection[str], required: str) -> bool:
    if required in granted:
        return True
    family = required.rpartition(":")[2]
    return family in ("read", "write") and f"admin:{family}" in granted
