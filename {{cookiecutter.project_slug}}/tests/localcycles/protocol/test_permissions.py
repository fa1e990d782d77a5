"""API keys and permissions as the reference servers have them (cycles-server's runtime
filter, cycles-server-admin's ``AuthInterceptor``, ``ApiKeyRepository`` and ``Permission``):
the runtime plane checks the key and its tenant only; the admin plane checks names."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest

from localcycles import RUNTIME_PERMISSIONS, LedgerError, LocalLedger
from support.localcycles_kit import (
    LC_ADMIN_KEY,
    LC_TENANT,
    LC_UNIT,
    FakeClock,
    ledger_state,
    reservation_body,
)

ERROR_FIELDS = {"error", "message", "request_id", "trace_id"}
SCOPE = "tenant:acme"
FUND = f"/v1/admin/budgets/fund?scope={SCOPE}&unit={LC_UNIT}"
ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
DAY_MS = 86_400_000

# The reference's closed Permission enum, written out here so a change is a visible diff.
REFERENCE_PERMISSIONS = [
    "reservations:create", "reservations:commit", "reservations:release",
    "reservations:extend", "reservations:list", "balances:read", "budgets:read",
    "budgets:write", "policies:read", "policies:write", "webhooks:read", "webhooks:write",
    "events:read", "admin:read", "admin:write", "admin:tenants:read", "admin:tenants:write",
    "admin:budgets:read", "admin:budgets:write", "admin:policies:read",
    "admin:policies:write", "admin:apikeys:read", "admin:apikeys:write",
    "admin:webhooks:read", "admin:webhooks:write", "admin:events:read", "admin:audit:read",
]  # fmt: skip
REFERENCE_DEFAULT = [
    "reservations:create", "reservations:commit", "reservations:release",
    "reservations:extend", "reservations:list", "balances:read",
]  # fmt: skip


def money(amount: int) -> dict[str, Any]:
    return {"unit": LC_UNIT, "amount": amount}


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget(SCOPE, allocated=10_000)
    return lc_ledger


def key_with(ledger: LocalLedger, *permissions: str) -> dict[str, str]:
    return {"X-Cycles-API-Key": ledger.create_api_key(LC_TENANT, permissions=list(permissions))}


def create_key(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/admin/api-keys", json={"tenant_id": LC_TENANT, **body}, headers=ADMIN)


def assert_error(resp: httpx.Response, status: int, code: str, text: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= ERROR_FIELDS and body["error"] == code
    assert text in body["message"], body


# --- the admin plane: permission names --------------------------------------------------------

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
    assert_error(resp, 403, "INSUFFICIENT_PERMISSIONS", "budgets:write")
    assert ledger_state(funded) == before


def test_a_runtime_key_cannot_read_budget_ledgers(
    funded: LocalLedger, lc_api_key: str, lc_http: httpx.Client
) -> None:
    resp = lc_http.get("/v1/admin/budgets", headers={"X-Cycles-API-Key": lc_api_key})
    assert_error(resp, 403, "INSUFFICIENT_PERMISSIONS", "budgets:read")


def test_budget_rights_are_granted_by_permission_or_the_admin_wildcard(
    funded: LocalLedger, lc_http: httpx.Client
) -> None:
    credit = {"operation": "CREDIT", "amount": money(5)}
    for headers in (key_with(funded, "budgets:write"), key_with(funded, "admin:write")):
        assert lc_http.post(FUND, json=credit, headers=headers).status_code == 200
    assert (funded.budget(SCOPE) or {})["allocated"] == 10_010
    reader = key_with(funded, "admin:read")
    assert lc_http.get("/v1/admin/budgets", headers=reader).status_code == 200
    resp = lc_http.post(FUND, json=credit, headers=reader)
    assert_error(resp, 403, "INSUFFICIENT_PERMISSIONS", "budgets:write")
    # A granular admin name is not a wildcard: only admin:read / admin:write are.
    granular = key_with(funded, "admin:budgets:write")
    resp = lc_http.post(FUND, json=credit, headers=granular)
    assert_error(resp, 403, "INSUFFICIENT_PERMISSIONS", "budgets:write")


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


def test_an_admin_key_header_on_a_dual_auth_endpoint_is_checked_not_skipped(
    funded: LocalLedger, lc_http: httpx.Client
) -> None:
    """As the reference does: a (wrong) admin key means admin authentication, even next to
    a tenant key that would have been allowed."""
    writer = key_with(funded, "budgets:write")
    before = ledger_state(funded)
    credit = {"operation": "CREDIT", "amount": money(1)}
    resp = lc_http.post(FUND, json=credit, headers={**writer, "X-Admin-API-Key": "wrong"})
    assert_error(resp, 401, "UNAUTHORIZED", "Invalid admin API key")
    assert ledger_state(funded) == before


# --- the runtime plane: no permission names ---------------------------------------------------


def runtime_calls(rid: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every runtime endpoint, once (the reference runtime server gates none by name)."""
    event = {k: v for k, v in reservation_body(1).items() if k != "estimate"}
    return [
        ("POST", "/v1/reservations", reservation_body(1)),
        ("POST", f"/v1/reservations/{rid}/extend", {"idempotency_key": "e", "extend_by_ms": 1000}),
        ("GET", "/v1/reservations", None),
        ("GET", f"/v1/reservations/{rid}", None),
        ("GET", "/v1/balances?tenant=acme", None),
        ("POST", "/v1/decide", reservation_body(1)),
        ("POST", "/v1/events", {**event, "actual": money(1)}),
        ("POST", f"/v1/reservations/{rid}/commit", {"idempotency_key": "c", "actual": money(1)}),
    ]


@pytest.mark.parametrize("permissions", [[], ["admin:audit:read"]], ids=["empty", "unrelated"])
def test_the_runtime_plane_checks_the_key_not_its_permission_names(
    funded: LocalLedger, lc_http: httpx.Client, permissions: list[str]
) -> None:
    resp = create_key(lc_http, name="bare", permissions=permissions)
    assert resp.status_code == 201 and resp.json()["permissions"] == permissions
    bare = {"X-Cycles-API-Key": resp.json()["key_secret"]}
    rid = lc_http.post("/v1/reservations", json=reservation_body(10), headers=bare).json()[
        "reservation_id"
    ]
    for method, url, body in runtime_calls(rid):
        answer = lc_http.request(method, url, json=body, headers=bare)
        assert answer.status_code < 300, (method, url, answer.text)
    other = lc_http.post("/v1/reservations", json=reservation_body(10), headers=bare).json()
    released = lc_http.post(
        f"/v1/reservations/{other['reservation_id']}/release",
        json={"idempotency_key": "r"},
        headers=bare,
    )
    assert released.status_code == 200


def test_a_refused_key_is_401_on_the_runtime_plane_and_403_on_the_admin_plane(
    funded: LocalLedger, lc_http: httpx.Client
) -> None:
    unknown = {"X-Cycles-API-Key": "cyc_live_not-a-real-key"}
    resp = lc_http.post("/v1/reservations", json=reservation_body(1), headers=unknown)
    assert_error(resp, 401, "UNAUTHORIZED", "KEY_NOT_FOUND")
    resp = lc_http.get("/v1/admin/budgets", headers=unknown)
    assert_error(resp, 403, "FORBIDDEN", "Invalid API key: KEY_NOT_FOUND")
    for url in ("/v1/balances?tenant=acme", "/v1/admin/budgets"):
        assert_error(lc_http.get(url), 401, "UNAUTHORIZED", "X-Cycles-API-Key")


def test_revoked_expired_and_suspended_tenant_keys_are_refused_with_the_reason(
    funded: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock
) -> None:
    revoked = funded.create_api_key(LC_TENANT, "cyc_local_revoked")
    funded.revoke_api_key(revoked)
    expiring = funded.create_api_key(
        LC_TENANT, "cyc_local_expiring", expires_at_ms=lc_clock.now_ms + 1_000
    )
    live = funded.create_api_key(LC_TENANT, "cyc_local_live")

    def balances(key: str) -> httpx.Response:
        return lc_http.get("/v1/balances?tenant=acme", headers={"X-Cycles-API-Key": key})

    assert_error(balances(revoked), 401, "UNAUTHORIZED", "KEY_REVOKED")
    assert balances(expiring).status_code == 200
    lc_clock.advance(1_001)  # past the expiry (the reference accepts a key at the instant)
    assert_error(balances(expiring), 401, "UNAUTHORIZED", "KEY_EXPIRED")
    assert balances(live).status_code == 200
    funded.set_tenant_status(LC_TENANT, "SUSPENDED")
    assert_error(balances(live), 401, "UNAUTHORIZED", "TENANT_SUSPENDED")
    funded.set_tenant_status(LC_TENANT, "ACTIVE")
    assert balances(live).status_code == 200


# --- creating keys ----------------------------------------------------------------------------


def test_runtime_permissions_are_the_reference_default_list(funded: LocalLedger) -> None:
    assert list(RUNTIME_PERMISSIONS) == REFERENCE_DEFAULT
    principal = funded.principal(funded.create_api_key(LC_TENANT))
    assert principal is not None and principal.permissions == frozenset(REFERENCE_DEFAULT)


def test_a_key_created_without_a_list_or_expiry_gets_the_reference_defaults(
    lc_ledger: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    created = create_key(lc_http, name="app")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["permissions"] == REFERENCE_DEFAULT
    expires = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires.timestamp() * 1000 == lc_clock.now_ms + 90 * DAY_MS
    key = body["key_secret"]
    lc_clock.advance(90 * DAY_MS + 1)
    assert lc_ledger.check_key(key) == "KEY_EXPIRED"


def test_a_key_created_with_expires_at_lives_until_then(
    lc_ledger: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    until = lc_clock.now_ms + 400 * DAY_MS
    stamp = dt.datetime.fromtimestamp(until / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    created = create_key(lc_http, name="app", expires_at=stamp)
    assert created.status_code == 201 and created.json()["expires_at"] == stamp
    key = created.json()["key_secret"]
    lc_clock.advance(400 * DAY_MS)
    assert lc_ledger.authenticate(key) == LC_TENANT
    lc_clock.advance(1)
    assert lc_ledger.check_key(key) == "KEY_EXPIRED"


def test_every_reference_permission_name_is_accepted(
    lc_ledger: LocalLedger, lc_http: httpx.Client
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    created = create_key(lc_http, name="all", permissions=REFERENCE_PERMISSIONS)
    assert created.status_code == 201, created.text
    assert created.json()["permissions"] == REFERENCE_PERMISSIONS


@pytest.mark.parametrize(
    "name", ["decide", "events:create", "Budgets:Write", "budgets write", "admin:*", ""]
)
def test_an_unknown_permission_name_is_refused(
    lc_ledger: LocalLedger, lc_http: httpx.Client, name: str
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    before = ledger_state(lc_ledger)
    resp = create_key(lc_http, name="app", permissions=["balances:read", name])
    assert_error(resp, 400, "INVALID_REQUEST", f"Unrecognized permission: {name}")
    assert ledger_state(lc_ledger) == before
    with pytest.raises(LedgerError) as caught:
        lc_ledger.create_api_key(LC_TENANT, permissions=[name])
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"permissions": "balances:read"},
        {"permissions": [1]},
        {"permissions": None, "name": None},
        {"expires_at": "next week"},
        {"scope_filter": ["tenant:acme"]},
    ],
)
def test_malformed_key_requests_are_refused(
    lc_ledger: LocalLedger, lc_http: httpx.Client, body: dict[str, Any]
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    before = ledger_state(lc_ledger)
    resp = create_key(lc_http, **{"name": "app", **body})
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_REQUEST", resp.text
    assert ledger_state(lc_ledger) == before


def test_a_key_needs_a_name_as_the_reference_requires(
    lc_ledger: LocalLedger, lc_http: httpx.Client
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    resp = create_key(lc_http)
    assert_error(resp, 400, "INVALID_REQUEST", "name")


@pytest.mark.parametrize("secret", ["k" * 8, "cyc_local_acme", "cyc_live_" + "x" * 43])
def test_the_stored_prefix_never_reveals_a_whole_key(
    lc_ledger: LocalLedger, lc_http: httpx.Client, secret: str
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    resp = create_key(lc_http, name="app", key_secret=secret)
    assert resp.status_code == 201, resp.text
    with lc_ledger.db.read() as conn:
        stored = conn.execute("SELECT key_prefix FROM api_keys").fetchone()["key_prefix"]
    assert stored == resp.json()["key_prefix"]
    assert len(stored) <= 6 and len(stored) < len(secret) / 2 and secret.startswith(stored)


def test_kept_secrets_survive_a_new_ledger_on_the_same_file(lc_ledger: LocalLedger) -> None:
    first = lc_ledger.keep_secret("runtime-key:acme", lambda: uuid.uuid4().hex)
    again = LocalLedger(lc_ledger.path)
    try:
        assert again.keep_secret("runtime-key:acme", lambda: "other") == first
    finally:
        again.close()


def test_a_revoked_key_can_be_registered_again(funded: LocalLedger, lc_api_key: str) -> None:
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
