"""Edges of the ledger's rules that mutation testing found unguarded: exact boundaries of
expiry and overdraft, replays, the key cache, zero amounts and the tenant listing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, LC_UNIT, FakeClock, reservation_body

SCOPE = f"tenant:{LC_TENANT}"
TTL_MS = 60_000
GRACE_MS = 5_000


def call(http: httpx.Client, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(path, json=body, headers={"X-Cycles-API-Key": key})


def reserve(http: httpx.Client, api_key: str, amount: int, **extra: Any) -> httpx.Response:
    body = reservation_body(amount, ttl_ms=TTL_MS, **extra)
    return call(http, api_key, "/v1/reservations", body)


def commit(http: httpx.Client, key: str, reservation_id: str, amount: int) -> httpx.Response:
    body = {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": LC_UNIT, "amount": amount}}
    return call(http, key, f"/v1/reservations/{reservation_id}/commit", body)


def event(http: httpx.Client, key: str, amount: int, policy: str) -> httpx.Response:
    body = {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": LC_TENANT},
        "action": {"kind": "llm.completion", "name": "test-model"},
        "actual": {"unit": LC_UNIT, "amount": amount},
        "overage_policy": policy,
    }
    return call(http, key, "/v1/events", body)


def test_a_commit_is_taken_until_expiry_plus_grace_and_not_a_millisecond_after(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str, lc_clock: FakeClock
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    on_time = reserve(lc_http, lc_api_key, 100).json()["reservation_id"]
    late = reserve(lc_http, lc_api_key, 100).json()["reservation_id"]
    lc_clock.advance(TTL_MS + GRACE_MS)
    assert commit(lc_http, lc_api_key, on_time, 60).status_code == 200
    lc_clock.advance(1)
    refused = commit(lc_http, lc_api_key, late, 60)
    assert (refused.status_code, refused.json()["error"]) == (410, "RESERVATION_EXPIRED")
    assert lc_ledger.budget(SCOPE)["spent"] == 60


def test_a_release_replayed_with_its_key_returns_the_first_answer(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    reservation_id = reserve(lc_http, lc_api_key, 100).json()["reservation_id"]
    body = {"idempotency_key": "release-once", "reason": "done"}
    path = f"/v1/reservations/{reservation_id}/release"
    first = call(lc_http, lc_api_key, path, body)
    again = call(lc_http, lc_api_key, path, body)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert lc_ledger.budget(SCOPE)["remaining"] == 1_000


def test_a_replayed_reservation_reports_its_lease_only_while_it_is_live(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str, lc_clock: FakeClock
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    first = reserve(lc_http, lc_api_key, 100, key="reserve-once").json()
    lc_clock.advance(1_000)
    replay = reserve(lc_http, lc_api_key, 100, key="reserve-once").json()
    assert replay["reservation_id"] == first["reservation_id"]
    assert replay["remaining_ttl_ms"] == TTL_MS - 1_000
    assert commit(lc_http, lc_api_key, first["reservation_id"], 10).status_code == 200
    finished = reserve(lc_http, lc_api_key, 100, key="reserve-once").json()
    assert finished["remaining_ttl_ms"] == 0


def test_a_replayed_dry_run_returns_its_first_answer_unchanged(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    # A dry run holds nothing, so its replay has no lease to recompute: the stored answer
    # comes back as it was (shadow mode retries its dry runs with the same key).
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    first = reserve(lc_http, lc_api_key, 5_000, key="dry-once", dry_run=True)
    again = reserve(lc_http, lc_api_key, 5_000, key="dry-once", dry_run=True)
    assert first.status_code == again.status_code == 200
    assert first.json()["decision"] == "DENY"
    assert again.json() == first.json()
    assert lc_ledger.budget(SCOPE)["reserved"] == 0


def test_a_revoked_key_stops_working_once_its_cached_check_has_lapsed(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str, lc_clock: FakeClock
) -> None:
    def balances() -> int:
        response = lc_http.get(
            "/v1/balances", params={"tenant": LC_TENANT}, headers={"X-Cycles-API-Key": lc_api_key}
        )
        return response.status_code

    assert balances() == 200  # now cached as a good key
    assert lc_ledger.revoke_api_key(lc_api_key)
    lc_clock.advance(1_001)  # past the cache's second
    assert balances() == 401


def test_a_zero_spend_event_charges_nothing(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    for policy in ("ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"):
        response = event(lc_http, lc_api_key, 0, policy)
        assert response.status_code == 201
        assert response.json()["charged"]["amount"] == 0
    assert lc_ledger.budget(SCOPE)["spent"] == 0


def denial_after(lc_http: httpx.Client, key: str) -> str:
    refused = reserve(lc_http, key, 1)
    assert refused.status_code == 409
    return str(refused.json()["error"])


def test_debt_exactly_at_the_overdraft_limit_is_not_over_it(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=100, overdraft_limit=50)
    charged = event(lc_http, lc_api_key, 150, "ALLOW_WITH_OVERDRAFT").json()["charged"]
    assert charged["amount"] == 150
    budget = lc_ledger.budget(SCOPE)
    assert (budget["spent"], budget["debt"]) == (100, 50)
    # At the limit, not past it: nothing is left, but the scope is not over its limit.
    assert denial_after(lc_http, lc_api_key) == "BUDGET_EXCEEDED"
    # An operator update recomputes the flag the same way.
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=100, overdraft_limit=50)
    assert denial_after(lc_http, lc_api_key) == "BUDGET_EXCEEDED"
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=100, overdraft_limit=49)
    assert denial_after(lc_http, lc_api_key) == "OVERDRAFT_LIMIT_EXCEEDED"


def test_an_overdraft_charge_on_a_scope_without_a_limit_takes_what_is_left_and_flags_it(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=100)
    charged = event(lc_http, lc_api_key, 150, "ALLOW_WITH_OVERDRAFT").json()["charged"]
    assert charged["amount"] == 100
    budget = lc_ledger.budget(SCOPE)
    assert (budget["spent"], budget["debt"], budget["remaining"]) == (100, 0, 0)
    assert denial_after(lc_http, lc_api_key) == "OVERDRAFT_LIMIT_EXCEEDED"


def test_the_admin_api_lists_the_tenants_it_created(
    lc_http: httpx.Client, lc_ledger: LocalLedger
) -> None:
    for tenant in ("acme", "acme-corp"):
        lc_ledger.create_tenant(tenant)
    listed = lc_http.get("/v1/admin/tenants", headers={"X-Admin-API-Key": LC_ADMIN_KEY})
    assert listed.status_code == 200
    body = listed.json()
    rows = body["tenants"] if isinstance(body, dict) else body
    assert sorted(row["tenant_id"] for row in rows) == ["acme", "acme-corp"]


def test_a_commit_without_metrics_leaves_no_metrics_on_the_reservation(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(SCOPE, LC_UNIT, allocated=1_000)
    reservation_id = reserve(lc_http, lc_api_key, 100).json()["reservation_id"]
    assert commit(lc_http, lc_api_key, reservation_id, 40).status_code == 200
    detail = lc_http.get(
        f"/v1/reservations/{reservation_id}", headers={"X-Admin-API-Key": LC_ADMIN_KEY}
    ).json()
    # Never a JSON null: runcycles rejects them, so an absent value is an absent field.
    assert "committed_metrics" not in detail
    assert None not in detail.values()


def test_a_dry_run_tells_a_missing_budget_from_one_in_another_unit(
    lc_http: httpx.Client, lc_ledger: LocalLedger, lc_api_key: str
) -> None:
    lc_ledger.set_budget(f"{SCOPE}/workspace:prod", LC_UNIT, allocated=1_000)
    prod = {"tenant": LC_TENANT, "workspace": "prod"}
    wrong_unit = reserve(lc_http, lc_api_key, 10, subject=prod, unit="TOKENS", dry_run=True)
    assert (wrong_unit.status_code, wrong_unit.json()["error"]) == (400, "UNIT_MISMATCH")
    # No budget anywhere on the tenant-only path: a dry run says so as a 200 DENY.
    missing = reserve(lc_http, lc_api_key, 10, dry_run=True)
    assert missing.status_code == 200
    assert (missing.json()["decision"], missing.json()["reason_code"]) == (
        "DENY",
        "BUDGET_NOT_FOUND",
    )
