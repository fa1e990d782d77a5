"""Provisioning over HTTP with the reference admin API's shapes and admin-key header."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from runcycles import CyclesClient

from support.localcycles_kit import LC_ADMIN_KEY, reservation_body

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}


def test_bootstrap_tenant_key_budget_and_fund(
    lc_http: httpx.Client, lc_client_factory: Callable[..., CyclesClient]
) -> None:
    tenant = {"tenant_id": "acme", "name": "Acme Corp"}
    assert lc_http.post("/v1/admin/tenants", json=tenant).status_code == 401
    assert (
        lc_http.post(
            "/v1/admin/tenants", json=tenant, headers={"X-Admin-API-Key": "nope"}
        ).status_code
        == 401
    )
    created = lc_http.post("/v1/admin/tenants", json=tenant, headers=ADMIN)
    assert created.status_code == 201 and created.json()["status"] == "ACTIVE"
    assert lc_http.post("/v1/admin/tenants", json=tenant, headers=ADMIN).status_code == 200
    bad = lc_http.post("/v1/admin/tenants", json={"tenant_id": "Not Valid"}, headers=ADMIN)
    assert bad.status_code == 400

    key = lc_http.post(
        "/v1/admin/api-keys", json={"tenant_id": "acme", "name": "app"}, headers=ADMIN
    )
    assert key.status_code == 201
    secret = key.json()["key_secret"]
    assert secret.startswith("cyc_live_") and key.json()["key_prefix"] == secret[:6]

    budget = {
        "tenant_id": "acme",
        "scope": "tenant:acme",
        "unit": "USD_MICROCENTS",
        "allocated": {"unit": "USD_MICROCENTS", "amount": 1_000},
        "overdraft_limit": {"unit": "USD_MICROCENTS", "amount": 50},
    }
    made = lc_http.post("/v1/admin/budgets", json=budget, headers=ADMIN)
    assert made.status_code == 201
    assert made.json()["remaining"] == {"unit": "USD_MICROCENTS", "amount": 1_000}
    again = lc_http.post("/v1/admin/budgets", json=budget, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"] == "DUPLICATE_RESOURCE"

    funded = lc_http.post(
        "/v1/admin/budgets/fund",
        params={"tenant_id": "acme", "scope": "tenant:acme", "unit": "USD_MICROCENTS"},
        json={
            "operation": "CREDIT",
            "amount": {"unit": "USD_MICROCENTS", "amount": 500},
            "idempotency_key": "fund-1",
        },
        headers=ADMIN,
    )
    assert funded.status_code == 200
    assert funded.json()["new_allocated"]["amount"] == 1_500
    patched = lc_http.patch(
        "/v1/admin/budgets",
        params={"scope": "tenant:acme", "unit": "USD_MICROCENTS"},
        json={"caps": {"max_tokens": 64}},
        headers=ADMIN,
    )
    assert patched.status_code == 200 and patched.json()["caps"] == {"max_tokens": 64}
    listed = lc_http.get("/v1/admin/budgets", params={"tenant_id": "acme"}, headers=ADMIN)
    assert [ledger["scope"] for ledger in listed.json()["ledgers"]] == ["tenant:acme"]

    client = lc_client_factory(secret)
    reserved = client.create_reservation(reservation_body(1_200))
    assert reserved.status == 200 and reserved.body["decision"] == "ALLOW_WITH_CAPS"
    # Admin key may read and force-release any tenant's reservation.
    rid = reserved.body["reservation_id"]
    assert lc_http.get(f"/v1/reservations/{rid}", headers=ADMIN).status_code == 200
    released = lc_http.post(
        f"/v1/reservations/{rid}/release",
        json={"idempotency_key": "ops-1", "reason": "[INCIDENT]"},
        headers=ADMIN,
    )
    assert released.status_code == 200 and released.json()["released"]["amount"] == 1_200


def test_a_budgets_tenant_id_is_in_the_body_exactly_under_the_admin_key(
    lc_http: httpx.Client,
) -> None:
    """The reference's createBudget contract: the admin key names the tenant in the body;
    an API key's tenant is implied, and naming it anyway is refused."""
    assert lc_http.post("/v1/admin/tenants", json={"tenant_id": "acme"}, headers=ADMIN)
    created = lc_http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": "acme", "name": "ops", "permissions": ["budgets:write"]},
        headers=ADMIN,
    )
    writer = {"X-Cycles-API-Key": created.json()["key_secret"]}
    budget = {
        "scope": "tenant:acme",
        "unit": "USD_MICROCENTS",
        "allocated": {"unit": "USD_MICROCENTS", "amount": 1_000},
    }
    for body, headers, needle in (
        (budget, ADMIN, "tenant_id is required"),
        ({**budget, "tenant_id": "acme"}, writer, "tenant_id MUST NOT be set"),
    ):
        refused = lc_http.post("/v1/admin/budgets", json=body, headers=headers)
        assert refused.status_code == 400 and needle in refused.json()["message"]
    made = lc_http.post("/v1/admin/budgets", json=budget, headers=writer)
    assert made.status_code == 201 and made.json()["tenant_id"] == "acme"
