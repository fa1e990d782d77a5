"""Validation of the admin (provisioning) requests, like ``validation`` for the protocol's.

Each function turns a request body (and query parameters) into a frozen spec the ledger
executes as is, or raises ``LedgerError`` 400. The ledger's Python conveniences
(``create_tenant``, ``create_api_key``, ``set_budget``) build their specs here too, so every
path into the ledger is validated once, here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MAX_INT64, invalid
from .permissions import RUNTIME_PERMISSIONS
from .scopes import normalize_scope
from .validation import POLICIES, UNITS, amount, caps, check_keys, choice, string
from .wire import parse_iso_ms

Body = dict[str, Any]

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
FUNDING_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT")
PERMISSION_PATTERN = re.compile(r"^[a-z_]+(?::[a-z_]+){0,2}$")
MAX_PERMISSIONS = 32


@dataclass(frozen=True)
class TenantSpec:
    tenant_id: str
    name: str


@dataclass(frozen=True)
class ApiKeySpec:
    tenant_id: str
    name: str
    permissions: tuple[str, ...]
    secret: str | None  # None: the ledger generates one
    expires_at_ms: int | None


@dataclass(frozen=True)
class BudgetSpec:
    tenant_id: str
    scope: str  # canonical
    unit: str
    allocated: int
    overdraft_limit: int
    caps: Body | None
    commit_overage_policy: str | None


@dataclass(frozen=True)
class BudgetUpdate:
    scope: str
    unit: str
    overdraft_limit: int | None
    caps: Body | None
    clear_caps: bool
    commit_overage_policy: str | None


@dataclass(frozen=True)
class Funding:
    scope: str
    tenant_id: str  # the scope's tenant, which owns the funding idempotency keys
    unit: str
    operation: str
    amount: int
    spent: int | None
    idempotency_key: str | None


# ---------------------------------------------------------------------- fields


def tenant_id(value: object) -> str:
    if not isinstance(value, str) or not TENANT_PATTERN.match(value):
        raise invalid("tenant_id must match ^[a-z0-9][a-z0-9-]*$ (at most 64 chars)")
    return value


def scope(value: object) -> tuple[str, str]:
    """Canonical scope and its tenant, or 400."""
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise invalid("scope must be a non-empty string of at most 1024 characters")
    try:
        canonical = normalize_scope(value)
    except ValueError as exc:
        raise invalid(f"invalid scope: {exc}") from None
    return canonical, canonical.split("/", 1)[0].split(":", 1)[1]


def unit(value: object) -> str:
    if not isinstance(value, str) or value not in UNITS:
        raise invalid(f"unit must be one of {', '.join(UNITS)}")
    return value


def whole_amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT64:
        raise invalid(f"{what} must be an integer in [0, {MAX_INT64}]")
    return value


def permissions(value: object) -> tuple[str, ...]:
    if value is None:
        return RUNTIME_PERMISSIONS
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_PERMISSIONS
        or not all(isinstance(p, str) and PERMISSION_PATTERN.match(p) for p in value)
    ):
        raise invalid(
            f"permissions must be a list of 1..{MAX_PERMISSIONS} names like 'balances:read'"
        )
    return tuple(dict.fromkeys(value))


def secret(value: object) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 8 <= len(value) <= 512
        or not (value.isascii() and value.isprintable())
        or " " in value
    ):
        raise invalid("API key must be 8..512 printable ASCII characters without spaces")
    return value


def _policy(body: Mapping[str, Any]) -> str | None:
    return choice(body, "commit_overage_policy", POLICIES, where="budget", default="") or None


# ---------------------------------------------------------------------- tenants and keys


def tenant_spec(tenant: object, name: object = None) -> TenantSpec:
    tid = tenant_id(tenant)
    label = string({"name": name}, "name", 256, where="tenant")
    return TenantSpec(tid, label or tid)


def tenant(body: Body) -> TenantSpec:
    check_keys(body, ("tenant_id", "name", "metadata"), ("tenant_id",), "tenant")
    return tenant_spec(body["tenant_id"], body.get("name"))


def api_key_spec(
    tenant: object,
    key: object = None,
    *,
    name: object = "default",
    permission_list: Sequence[str] | None = None,
    expires_at_ms: int | None = None,
) -> ApiKeySpec:
    label = string({"name": name}, "name", 256, where="api_key") or "default"
    perms = permissions(list(permission_list) if permission_list is not None else None)
    return ApiKeySpec(tenant_id(tenant), label, perms, secret(key), expires_at_ms)


def api_key(body: Body) -> ApiKeySpec:
    check_keys(
        body,
        ("tenant_id", "name", "description", "permissions", "key_secret", "expires_at", "metadata"),
        ("tenant_id",),
        "api_key",
    )
    expires = body.get("expires_at")
    expires_ms = None
    if expires is not None:
        try:
            if not isinstance(expires, str):
                raise ValueError(expires)
            expires_ms = parse_iso_ms(expires)
        except (ValueError, OverflowError, OSError):
            raise invalid("expires_at must be an ISO 8601 date-time") from None
    return ApiKeySpec(
        tenant_id(body["tenant_id"]),
        string(body, "name", 256, where="api_key") or "default",
        permissions(body.get("permissions")),
        # Local extension: a caller-chosen secret, so dev keys can be fixed in .env files.
        secret(body.get("key_secret")),
        expires_ms,
    )


# ---------------------------------------------------------------------- budgets


def budget_spec(
    scope_text: object,
    unit_name: object,
    allocated: object,
    overdraft_limit: object = 0,
    cap_values: object = None,
    commit_overage_policy: object = None,
) -> BudgetSpec:
    canonical, owner = scope(scope_text)
    return BudgetSpec(
        owner,
        canonical,
        unit(unit_name),
        whole_amount(allocated, "allocated"),
        whole_amount(overdraft_limit, "overdraft_limit"),
        caps(cap_values),
        _policy({"commit_overage_policy": commit_overage_policy}),
    )


def budget_create(body: Body, key_tenant: str | None) -> BudgetSpec:
    """POST /v1/admin/budgets; ``key_tenant`` None under the admin key (tenant from body)."""
    check_keys(
        body,
        (
            "tenant_id",
            "scope",
            "unit",
            "allocated",
            "overdraft_limit",
            "commit_overage_policy",
            "rollover_policy",
            "period_start",
            "period_end",
            "metadata",
            "caps",
        ),
        ("scope", "unit", "allocated"),
        "budget",
    )
    budget_unit = unit(body["unit"])
    allocated = amount(body["allocated"], "allocated")
    overdraft = (
        amount(body["overdraft_limit"], "overdraft_limit")
        if body.get("overdraft_limit") is not None
        else None
    )
    if allocated.unit != budget_unit or (overdraft is not None and overdraft.unit != budget_unit):
        raise invalid("amount units must match the budget unit")
    spec = budget_spec(
        body["scope"],
        budget_unit,
        allocated.amount,
        overdraft.amount if overdraft else 0,
        body.get("caps"),
        body.get("commit_overage_policy"),
    )
    owner = key_tenant
    if owner is None and body.get("tenant_id") is not None:
        owner = tenant_id(body["tenant_id"])
    if owner is not None and owner != spec.tenant_id:
        raise invalid("scope must start with tenant:<tenant_id>")
    return spec


def _scope_and_unit(query: Mapping[str, str]) -> tuple[str, str, str]:
    if not query.get("scope") or not query.get("unit"):
        raise invalid("scope and unit query parameters are required")
    canonical, owner = scope(query["scope"])
    return canonical, owner, unit(query["unit"])


def budget_update(query: Mapping[str, str], body: Body) -> BudgetUpdate:
    """PATCH /v1/admin/budgets?scope=..&unit=.. (overdraft limit, policy; caps locally)."""
    canonical, _, budget_unit = _scope_and_unit(query)
    check_keys(body, ("overdraft_limit", "commit_overage_policy", "metadata", "caps"), (), "budget")
    overdraft = (
        amount(body["overdraft_limit"], "overdraft_limit")
        if body.get("overdraft_limit") is not None
        else None
    )
    if overdraft is not None and overdraft.unit != budget_unit:
        raise invalid("overdraft_limit unit must match the budget unit")
    new_caps = caps(body.get("caps"))
    return BudgetUpdate(
        canonical,
        budget_unit,
        overdraft.amount if overdraft else None,
        new_caps,
        "caps" in body and new_caps is None,
        _policy(body),
    )


def funding(query: Mapping[str, str], body: Body) -> Funding:
    """POST /v1/admin/budgets/fund?scope=..&unit=..: CREDIT, DEBIT, RESET, RESET_SPENT..."""
    canonical, owner, budget_unit = _scope_and_unit(query)
    check_keys(
        body,
        ("operation", "amount", "spent", "reason", "idempotency_key", "metadata"),
        ("operation", "amount"),
        "funding",
    )
    operation = choice(body, "operation", FUNDING_OPERATIONS, where="funding", default="")
    if not operation:
        raise invalid(f"funding.operation must be one of {', '.join(FUNDING_OPERATIONS)}")
    value = amount(body["amount"], "amount")
    spent = amount(body["spent"], "spent") if body.get("spent") is not None else None
    if value.unit != budget_unit or (spent is not None and spent.unit != budget_unit):
        raise invalid("amount units must match the budget unit")
    string(body, "reason", 512, where="funding")
    return Funding(
        canonical,
        owner,
        budget_unit,
        operation,
        value.amount,
        spent.amount if spent else None,
        string(body, "idempotency_key", 256, where="funding"),
    )
