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
from .permissions import RUNTIME_PERMISSIONS, unknown
from .scopes import normalize_scope
from .validation import POLICIES, UNITS, amount, caps, check_keys, choice, string
from .wire import parse_iso_ms

Body = dict[str, Any]

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
FUNDING_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "RESET_SPENT", "REPAY_DEBT")
#: How long a key created through the admin API lives unless told (the reference's default).
DEFAULT_KEY_LIFETIME_MS = 90 * 86_400_000


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
    tenant_id: str  # the scope's tenant (funding keys are global: ledger/fund_idempotency)
    unit: str
    operation: str
    amount: int
    spent: int | None
    idempotency_key: str | None
    # Part of the request the reference hashes for idempotency (the whole body counts).
    reason: str | None = None
    metadata: Body | None = None


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
    """The reference's rules: absent is the default list; an empty list is allowed (such a
    key may still use the runtime plane); any name outside the closed set is a 400."""
    if value is None:
        return RUNTIME_PERMISSIONS
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise invalid("permissions must be a list of permission names like 'balances:read'")
    bad = unknown(value)
    if bad is not None:
        raise invalid(f"Unrecognized permission: {bad[:64]}")
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


def api_key(body: Body, now_ms: int) -> ApiKeySpec:
    """POST /v1/admin/api-keys: ``name`` is required and the key expires
    ``DEFAULT_KEY_LIFETIME_MS`` after ``now_ms`` unless ``expires_at`` says otherwise, as the
    reference admin API has it."""
    check_keys(
        body,
        (
            "tenant_id",
            "name",
            "description",
            "permissions",
            "scope_filter",
            "key_secret",
            "expires_at",
            "metadata",
        ),
        ("tenant_id", "name"),
        "api_key",
    )
    expires = body.get("expires_at")
    expires_ms = now_ms + DEFAULT_KEY_LIFETIME_MS
    if expires is not None:
        try:
            if not isinstance(expires, str):
                raise ValueError(expires)
            expires_ms = parse_iso_ms(expires)
        except (ValueError, OverflowError, OSError):
            raise invalid("expires_at must be an ISO 8601 date-time") from None
    if body.get("scope_filter") is not None:
        # Accepted by the reference; keys here are scoped to their tenant only.
        raise invalid("api_key.scope_filter is not supported by the embedded server")
    string(body, "description", 1024, where="api_key")
    return ApiKeySpec(
        tenant_id(body["tenant_id"]),
        string(body, "name", 256, where="api_key", required=True) or "default",
        permissions(body.get("permissions")),
        # Local extension: a caller-chosen secret, so dev keys can be fixed in .env files.
        secret(body.get("key_secret")),
        expires_ms,
    )


def key_validation(body: Body) -> str:
    """POST /v1/auth/validate: the secret to look up (the reference's ``@NotBlank``)."""
    check_keys(body, ("key_secret",), ("key_secret",), "auth_validate")
    value = body["key_secret"]
    if not isinstance(value, str) or not value.strip():
        raise invalid("auth_validate.key_secret must be a non-blank string")
    return value


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
    # The reference's contract: tenant_id in the body exactly when the admin key is used.
    if key_tenant is None:
        if body.get("tenant_id") is None:
            raise invalid(
                "tenant_id is required in the request body when using admin key authentication"
            )
        owner = tenant_id(body["tenant_id"])
    elif body.get("tenant_id") is not None:
        raise invalid(
            "tenant_id MUST NOT be set when using API key authentication "
            "(tenant is inferred from the key)"
        )
    else:
        owner = key_tenant
    if owner != spec.tenant_id:
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
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("funding.metadata must be a JSON object")
    return Funding(
        canonical,
        owner,
        budget_unit,
        operation,
        value.amount,
        spent.amount if spent else None,
        string(body, "idempotency_key", 256, where="funding"),
        # The reference bounds only its length (@Size(max = 512)): "" is a reason too.
        string(body, "reason", 512, where="funding", min_len=0),
        metadata,
    )
