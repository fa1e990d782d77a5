"""The Cycles admin API as ``flask cycles`` uses it: one request helper and the calls
that provision tenants, runtime API keys and budgets.

Requests have exactly the reference admin API's shapes (cycles-server-admin, port 7979, at
the version compose pins), so the same commands provision the embedded development ledger
and a real Cycles stack; its test (``cycles/test_admin_api_requests.py`` under ``tests/``)
checks every body against the reference's validation rules. Any failure becomes a one-line
:class:`click.ClickException`, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
import httpx

from ..money import UNIT
from . import key_expiry
from .transport import bound_httpx

# What the app's runtime key may do, in the reference admin server's permission names (its
# Permission enum; it refuses any other name with 400). The app reserves, commits, releases,
# extends and lists reservations and reads balances; decide and events are not gated by a
# permission on the reference runtime server. This is the reference's default list, sent
# explicitly so that a key never gets more (its docs announce budgets:* and policies:* in
# the default of later versions) and never depends on a server's default.
RUNTIME_KEY_PERMISSIONS: tuple[str, ...] = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
)
# The reference server shows a key by its first 14 characters (key_prefix): enough to find
# it in the admin API's key list, too few to use it.
KEY_PREFIX_CHARS = 14

HTTP_TIMEOUT_S = 10.0

Json = dict[str, Any]


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
            # The whole call, not each read, ends within HTTP_TIMEOUT_S; the answer is capped.
            with bound_httpx(httpx.Client(timeout=HTTP_TIMEOUT_S), total_s=HTTP_TIMEOUT_S) as http:
                response = http.request(
                    method, self.url + path, json=body, params=params, headers=dict(self.headers)
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


def key_works(url: str, key: str, cycles_tenant: str) -> bool:
    """Whether the Cycles server at ``url`` takes ``key`` as ``cycles_tenant``'s key."""
    runtime = Endpoint(url, {"X-Cycles-API-Key": key})
    status, _ = runtime.call(
        "GET", "/v1/balances", params={"tenant": cycles_tenant}, accept=(200, 401, 403)
    )
    return status == 200


def key_prefix(secret: str) -> str:
    return secret[:KEY_PREFIX_CHARS] + "..."


def create_tenant(admin: Endpoint, tenant_id: str) -> None:
    # 201 created, 200 exists; 409 DUPLICATE_RESOURCE: exists under another name (made by
    # someone else): it is still the tenant to provision.
    status, payload = admin.call(
        "POST",
        "/v1/admin/tenants",
        body={"tenant_id": tenant_id, "name": tenant_id},
        accept=(200, 201, 409),
    )
    if status == 409 and payload.get("error") != "DUPLICATE_RESOURCE":
        raise click.ClickException(
            f"tenant {tenant_id}: HTTP 409 {payload.get('error')}: {payload.get('message')}"
        )
    click.echo(f"tenant {tenant_id}: {'created' if status == 201 else 'exists'}")


@dataclass(frozen=True)
class RuntimeKey:
    """A runtime API key and when it ends (None: not known, e.g. a development key)."""

    secret: str
    expires_at: datetime | None


def create_api_key(admin: Endpoint, tenant_id: str, name: str, expires_at: datetime) -> RuntimeKey:
    """A new runtime key of ``tenant_id`` that ends at ``expires_at``."""
    _, key = admin.call(
        "POST",
        "/v1/admin/api-keys",
        body={
            "tenant_id": tenant_id,
            "name": name,
            "permissions": list(RUNTIME_KEY_PERMISSIONS),
            "expires_at": key_expiry.iso(expires_at),
        },
    )
    secret = key.get("key_secret")
    if not isinstance(secret, str) or not secret:
        raise click.ClickException(f"the admin API returned no key_secret for {tenant_id!r}")
    # The server's word on the expiry wins; a server that sends none was told ours.
    return RuntimeKey(secret, key_expiry.parse(key.get("expires_at")) or expires_at)


@dataclass(frozen=True)
class KeyStatus:
    """The admin API's answer about a key: usable, whose, until when."""

    valid: bool
    tenant_id: str
    expires_at: datetime | None


def validate_key(admin: Endpoint, secret: str) -> KeyStatus | None:
    """What the admin API knows of ``secret`` (``POST /v1/auth/validate``, admin key), or
    None when it has no such endpoint (then only a runtime call can tell)."""
    status, payload = admin.call(
        "POST", "/v1/auth/validate", body={"key_secret": secret}, accept=(200, 404, 405)
    )
    if status != 200:
        return None
    tenant = payload.get("tenant_id")
    return KeyStatus(
        payload.get("valid") is True,
        tenant if isinstance(tenant, str) else "",
        key_expiry.parse(payload.get("expires_at")),
    )


def create_budget(
    admin: Endpoint, tenant_id: str, scope: str, microcents: int, *, report: bool = True
) -> bool:
    """Create the budget at ``scope`` unless it exists; True when it was created."""
    status, payload = admin.call(
        "POST",
        "/v1/admin/budgets",
        body={
            "tenant_id": tenant_id,
            "scope": scope,
            "unit": UNIT,
            "allocated": {"amount": microcents, "unit": UNIT},
        },
        accept=(201, 409),
    )
    if status == 409 and payload.get("error") != "DUPLICATE_RESOURCE":
        raise click.ClickException(
            f"budget {scope}: HTTP 409 {payload.get('error')}: {payload.get('message')}"
        )
    # An existing budget is left as it is: re-running provisioning never resets spend.
    if report:
        click.echo(f"budget {scope}: {'created' if status == 201 else 'exists (unchanged)'}")
    return status == 201


def fund_budget(admin: Endpoint, tenant_id: str, scope: str, microcents: int, reason: str) -> Json:
    """Add ``microcents`` to the budget at ``scope`` (a CREDIT); the admin API's answer."""
    _, result = admin.call(
        "POST",
        "/v1/admin/budgets/fund",
        params={"tenant_id": tenant_id, "scope": scope, "unit": UNIT},
        body={
            "operation": "CREDIT",
            "amount": {"amount": microcents, "unit": UNIT},
            "reason": reason,
        },
    )
    return result


def find_budget(admin: Endpoint, tenant_id: str, scope: str) -> Json | None:
    """The admin API's BudgetLedger of the budget at exactly ``scope``, or None (every page:
    the scopes below it, its end users' say, may fill the first)."""
    for ledger in list_budgets(admin, tenant_id, scope):
        if ledger.get("scope") == scope:
            return ledger
    return None


# GET /v1/admin/budgets answers at most 100 ledgers a page (the reference's cap). Sorted by
# scope, which spending never changes: by its default (utilization) calls made while the
# pages are read would move budgets across pages, so some would be missed or seen twice.
LIST_PAGE = 100


def list_budgets(admin: Endpoint, tenant_id: str, scope_prefix: str) -> list[Json]:
    """Every BudgetLedger of ``tenant_id`` whose scope starts with ``scope_prefix`` (a string
    prefix: ``tenant:a`` matches ``tenant:ab`` too), following the pages to the end."""
    params = {
        "tenant_id": tenant_id,
        "scope_prefix": scope_prefix,
        "unit": UNIT,
        "sort_by": "scope",
        "sort_dir": "asc",
        "limit": str(LIST_PAGE),
    }
    found: list[Json] = []
    seen: set[str] = set()
    while True:
        _, payload = admin.call("GET", "/v1/admin/budgets", params=params)
        ledgers = payload.get("ledgers")
        found += (
            [row for row in ledgers if isinstance(row, dict)] if isinstance(ledgers, list) else []
        )
        cursor = payload.get("next_cursor")
        if payload.get("has_more") is not True:
            return found
        # A server that says "more" without a new place to resume would loop forever.
        if not isinstance(cursor, str) or not cursor or cursor in seen:
            raise click.ClickException(
                f"GET {admin.url}/v1/admin/budgets: has_more without a new next_cursor"
            )
        seen.add(cursor)
        params["cursor"] = cursor


def ledger_amount(ledger: Json, name: str) -> int:
    """One amount of a BudgetLedger or funding answer (``{"amount": 5, "unit": ...}``)."""
    value = ledger.get(name)
    amount = value.get("amount") if isinstance(value, dict) else None
    if not isinstance(amount, int):
        raise click.ClickException(f"the admin API's answer has no {name} amount")
    return amount


def set_allocation(admin: Endpoint, tenant_id: str, scope: str, microcents: int) -> Json:
    """Set the allocation of the budget at ``scope`` (RESET: the reference's operation for
    resizing a budget; spent, holds and debt are kept); the admin API's answer."""
    _, result = admin.call(
        "POST",
        "/v1/admin/budgets/fund",
        params={"tenant_id": tenant_id, "scope": scope, "unit": UNIT},
        body={
            "operation": "RESET",
            "amount": {"amount": microcents, "unit": UNIT},
            "reason": "allocation set",
        },
    )
    return result


@dataclass(frozen=True)
class SpentReset:
    """A RESET_SPENT's outcome: the answer, or the error code of a refused key reuse."""

    result: Json
    refused: str | None = None


def reset_spent(
    admin: Endpoint,
    tenant_id: str,
    scope: str,
    microcents: int,
    reason: str,
    idempotency_key: str | None = None,
) -> SpentReset:
    """Start a new period on the budget at ``scope`` (RESET_SPENT): allocated becomes
    ``microcents``, spent 0; live holds (reserved) and debt are kept, as the reference
    defines it. A key the server saw with another body is refused (409
    IDEMPOTENCY_MISMATCH): reported, not raised, so a caller can tell it was done."""
    body: Json = {
        "operation": "RESET_SPENT",
        "amount": {"amount": microcents, "unit": UNIT},
        "reason": reason,
    }
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    status, result = admin.call(
        "POST",
        "/v1/admin/budgets/fund",
        params={"tenant_id": tenant_id, "scope": scope, "unit": UNIT},
        body=body,
        accept=(200, 409) if idempotency_key else (200,),
    )
    if status == 409:
        if result.get("error") != "IDEMPOTENCY_MISMATCH":
            raise click.ClickException(
                f"budget {scope}: HTTP 409 {result.get('error')}: {result.get('message')}"
            )
        return SpentReset(result, refused="IDEMPOTENCY_MISMATCH")
    return SpentReset(result)
