"""Each API key may do what its permission list says, and nothing else (403 FORBIDDEN)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from localcycles import RUNTIME_PERMISSIONS, LedgerError, LocalLedger

from .testkit import (
    LC_ADMIN_KEY,
    LC_TENANT,
    LC_UNIT,
    ledger_state,
    reservation_body,
)

ERROR_FIELDS = {"error", "message", "request_id", "trace_id"}
SCOPE = "tenant:acme"
FUND = f"/v1/admin/budgets/fund?scope={SCOPE}&unit={LC_UNIT}"


def money(amount: int) -> dict[str, Any]:
    return {"unit": LC_UNIT, "amount": amount}


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget(SCOPE, allocated=10_000)
    return lc_ledger


def key_with(ledger: LocalLedger, *permissions: str) -> dict[str, str]:
    return {"X-Cycles-API-Key": ledger.create_api_key(LC_TENANT, permissions=list(permissions))}


def assert_forbidden(resp: httpx.Response, permission: str) -> None:
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert set(body) >= ERROR_FIELDS and body["error"] == "FORBIDDEN"
    assert permission in body["message"]


# What a runtime key must not do, with the permission the reference admin API requires.
BUDGET_WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/admin/budgets", {"scope": "tenant:acme/workspace:new", "unit": LC_UNIT,
                                   "allocated": money(10**9)}),
    ("POST", FUND, {"operation": "CREDIT", "amount": money(10**9)}),
    ("POST", FUND, {"operation": "RESET", "amount": money(10**9)}),
    ("POST", FUND, {"operation": "RESET_SPENT", "amount": money(10**9), "spent": money(0)}),
    ("POST", FUND, {"operation": "REPAY_DEBT", "amount": money(1)}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body"), BUDGET_WRITES)
def test_a_runtime_key_cannot_create_or_fund_budgets(
    funded: LocalLedger,
    lc_api_key: str,
    lc_http: httpx.Client,
    method: str,
    url: str,
    body: dict[str, Any],
) -> None:
    before = ledger_state(funded)
    resp = lc_http.request(method, url, json=body, headers={"X-Cycles-API-Key": lc_api_key})
    assert_forbidden(resp, "budgets:write")
    assert ledger_state(funded) == before


def test_a_runtime_key_cannot_read_budget_ledgers(
    funded: LocalLedger, lc_api_key: str, lc_http: httpx.Client
) -> None:
    resp = lc_http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": lc_api_key})
    assert_forbidden(resp, "budgets:read")


def test_budget_rights_are_granted_by_permission_or_the_admin_wildcard(
    funded: LocalLedger, lc_http: httpx.Client
) -> None:
    for headers in (key_with(funded, "budgets:write"), key_with(funded, "admin:write")):
        credit = {"operation": "CREDIT", "amount": money(5)}
        assert lc_http.post(FUND, json=credit, headers=headers).status_code == 200
    assert (funded.budget(SCOPE) or {})["allocated"] == 10_010
    reader = key_with(funded, "admin:read")
    assert lc_http.get("/v1/admin/budgets", headers=reader).status_code == 200
    assert_forbidden(lc_http.post(FUND, json=credit, headers=reader), "budgets:write")


def test_budget_writes_stay_within_the_keys_tenant(
    funded: LocalLedger, lc_http: httpx.Client
) -> None:
    funded.create_tenant("globex")
    funded.set_budget("tenant:globex", allocated=100)
    writer = key_with(funded, "budgets:write")
    before = ledger_state(funded)
    other = "/v1/admin/budgets/fund?scope=tenant:globex&unit=" + LC_UNIT
    resp = lc_http.post(other, json={"operation": "CREDIT", "amount": money(1)}, headers=writer)
    assert resp.status_code == 403 and resp.json()["error"] == "FORBIDDEN"
    assert ledger_state(funded) == before


# Each runtime endpoint and the permission it needs (the reference servers' names).
def runtime_calls(rid: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    commit = {"idempotency_key": "c", "actual": money(1)}
    return [
        ("reservations:create", "POST", "/v1/reservations", reservation_body(1)),
        ("reservations:commit", "POST", f"/v1/reservations/{rid}/commit", commit),
        ("reservations:release", "POST", f"/v1/reservations/{rid}/release",
         {"idempotency_key": "r"}),
        ("reservations:extend", "POST", f"/v1/reservations/{rid}/extend",
         {"idempotency_key": "e", "extend_by_ms": 1000}),
        ("reservations:list", "GET", "/v1/reservations", None),
        ("reservations:list", "GET", f"/v1/reservations/{rid}", None),
        ("balances:read", "GET", "/v1/balances?tenant=acme", None),
        ("decide", "POST", "/v1/decide", reservation_body(1)),
        ("events:create", "POST", "/v1/events",
         {**{k: v for k, v in reservation_body(1).items() if k != "estimate"}, "actual": money(1)}),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(len(runtime_calls(""))))
def test_each_runtime_endpoint_needs_its_permission(
    funded: LocalLedger, lc_api_key: str, lc_http: httpx.Client, index: int
) -> None:
    owner = {"X-Cycles-API-Key": lc_api_key}
    rid = lc_http.post("/v1/reservations", json=reservation_body(10), headers=owner).json()[
        "reservation_id"
    ]
    permission, method, url, body = runtime_calls(rid)[index]
    lacking = key_with(funded, *(p for p in RUNTIME_PERMISSIONS if p != permission))
    before = ledger_state(funded)
    assert_forbidden(lc_http.request(method, url, json=body, headers=lacking), permission)
    assert ledger_state(funded) == before
    allowed = key_with(funded, permission)
    assert lc_http.request(method, url, json=body, headers=allowed).status_code < 300


def test_runtime_keys_hold_no_budget_rights_by_default(funded: LocalLedger) -> None:
    principal = funded.principal(funded.create_api_key(LC_TENANT))
    assert principal is not None
    assert principal.permissions == frozenset(RUNTIME_PERMISSIONS)
    assert not any(p.startswith(("budgets:", "admin:")) for p in principal.permissions)


@pytest.mark.parametrize("secret", ["k" * 8, "cyc_local_acme", "cyc_live_" + "x" * 43])
def test_the_stored_prefix_never_reveals_a_whole_key(
    lc_ledger: LocalLedger, lc_http: httpx.Client, secret: str
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    resp = lc_http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": LC_TENANT, "key_secret": secret},
        headers={"X-Admin-API-Key": LC_ADMIN_KEY},
    )
    assert resp.status_code == 201, resp.text
    with lc_ledger.db.read() as conn:
        stored = conn.execute("SELECT key_prefix FROM api_keys").fetchone()["key_prefix"]
    assert stored == resp.json()["key_prefix"]
    assert len(stored) <= 6 and len(stored) < len(secret) / 2 and secret.startswith(stored)


@pytest.mark.parametrize(
    "permissions", [[], ["Budgets:Write"], ["budgets write"], "balances:read", [1], ["a"] * 33]
)
def test_malformed_permission_lists_are_refused(
    lc_ledger: LocalLedger, lc_http: httpx.Client, permissions: Any
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    before = ledger_state(lc_ledger)
    resp = lc_http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": LC_TENANT, "permissions": permissions},
        headers={"X-Admin-API-Key": LC_ADMIN_KEY},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_REQUEST"
    assert ledger_state(lc_ledger) == before


def test_kept_secrets_survive_a_new_ledger_on_the_same_file(lc_ledger: LocalLedger) -> None:
    first = lc_ledger.keep_secret("runtime-key:acme", lambda: uuid.uuid4().hex)
    again = LocalLedger(lc_ledger.path)
    try:
        assert again.keep_secret("runtime-key:acme", lambda: "other") == first
    finally:
        again.close()


def test_a_revoked_key_is_refused(funded: LocalLedger, lc_api_key: str) -> None:
    assert funded.revoke_api_key(lc_api_key)
    assert funded.authenticate(lc_api_key) is None
    assert funded.create_api_key(LC_TENANT, lc_api_key) == lc_api_key  # re-registering
    assert funded.authenticate(lc_api_key) == LC_TENANT


def test_a_key_cannot_be_registered_for_a_missing_tenant(lc_ledger: LocalLedger) -> None:
    before = ledger_state(lc_ledger)
    with pytest.raises(LedgerError) as caught:
        lc_ledger.create_api_key("globex", "cyc_local_globex")
    assert caught.value.code == "TENANT_NOT_FOUND"
    assert ledger_state(lc_ledger) == before
