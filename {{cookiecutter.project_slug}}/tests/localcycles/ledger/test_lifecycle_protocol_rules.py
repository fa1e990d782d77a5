"""Protocol rules: idempotency, tenancy, auth, expiry and extension limits, units, scopes."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from runcycles import CyclesClient
from runcycles.models import ReservationCreateResponse

from localcycles import LocalLedger
from support.localcycles_kit import LC_UNIT, FakeClock, reservation_body


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    return lc_ledger


def test_same_key_and_body_replays_the_same_reservation(
    funded: LocalLedger, lc_client: CyclesClient
) -> None:
    body = reservation_body(100, key="k-1")
    first = lc_client.create_reservation(body)
    again = lc_client.create_reservation(body)
    assert first.status == again.status == 200
    assert again.body["reservation_id"] == first.body["reservation_id"]
    ReservationCreateResponse.model_validate(again.body)
    assert (funded.budget("tenant:acme") or {})["reserved"] == 100

    other = lc_client.create_reservation(reservation_body(101, key="k-1"))
    assert other.status == 409 and other.body["error"] == "IDEMPOTENCY_MISMATCH"

    rid = first.body["reservation_id"]
    commit = {"idempotency_key": "c-1", "actual": {"unit": LC_UNIT, "amount": 80}}
    assert (
        lc_client.commit_reservation(rid, commit).body
        == lc_client.commit_reservation(rid, commit).body
    )
    finalized = lc_client.commit_reservation(rid, {**commit, "idempotency_key": "c-2"})
    assert finalized.status == 409 and finalized.body["error"] == "RESERVATION_FINALIZED"
    mismatch = lc_client.commit_reservation(
        rid, {**commit, "actual": {"unit": LC_UNIT, "amount": 81}}
    )
    assert mismatch.status == 409 and mismatch.body["error"] == "IDEMPOTENCY_MISMATCH"
    assert (funded.budget("tenant:acme") or {})["spent"] == 80


def test_header_key_must_match_body_key(
    funded: LocalLedger, lc_server: object, lc_http: httpx.Client, lc_api_key: str
) -> None:
    resp = lc_http.post(
        "/v1/reservations",
        json=reservation_body(1, key="body-key"),
        headers={"X-Cycles-API-Key": lc_api_key, "X-Idempotency-Key": "header-key"},
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "INVALID_REQUEST"
    assert set(body) == {"error", "message", "request_id", "trace_id"}
    assert resp.headers["X-Cycles-Trace-Id"] == body["trace_id"]


def test_auth_and_tenant_isolation(
    funded: LocalLedger,
    lc_client: CyclesClient,
    lc_client_factory: Callable[..., CyclesClient],
) -> None:
    funded.create_tenant("globex")
    funded.set_budget("tenant:globex", allocated=10_000)
    globex = lc_client_factory(funded.create_api_key("globex"))
    bad = lc_client_factory("cyc_live_not-a-real-key")

    assert bad.create_reservation(reservation_body(1)).status == 401
    assert bad.get_balances(tenant="acme").body["error"] == "UNAUTHORIZED"
    # A subject naming another tenant, another tenant's reservation or balances: 403.
    assert globex.create_reservation(reservation_body(1)).status == 403
    rid = lc_client.create_reservation(reservation_body(1)).body["reservation_id"]
    for resp in (
        globex.commit_reservation(
            rid, {"idempotency_key": "x", "actual": {"unit": LC_UNIT, "amount": 1}}
        ),
        globex.release_reservation(rid, {"idempotency_key": "x"}),
        globex.get_reservation(rid),
        globex.get_balances(tenant="acme"),
        globex.list_reservations(tenant="acme"),
    ):
        assert resp.status == 403 and resp.body["error"] == "FORBIDDEN"
    own = globex.get_balances(tenant="globex")
    assert [b["scope_path"] for b in own.body["balances"]] == ["tenant:globex"]


def test_commit_after_expiry_and_grace_is_gone_and_hold_returns(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock
) -> None:
    body = reservation_body(400, ttl_ms=1_000, grace_period_ms=0)
    rid = lc_client.create_reservation(body).body["reservation_id"]
    lc_clock.advance(1_000)  # at expiry exactly: still committable
    assert lc_client.get_reservation(rid).status == 200
    lc_clock.advance(1)
    assert (funded.budget("tenant:acme") or {})["reserved"] == 0
    late = lc_client.commit_reservation(
        rid, {"idempotency_key": "late", "actual": {"unit": LC_UNIT, "amount": 1}}
    )
    assert late.status == 410 and late.body["error"] == "RESERVATION_EXPIRED"
    assert lc_client.get_reservation(rid).status == 410
    listed = lc_client.list_reservations(status="EXPIRED")
    assert [r["reservation_id"] for r in listed.body["reservations"]] == [rid]


def test_grace_period_allows_commit_but_not_extend(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock
) -> None:
    body = reservation_body(400, ttl_ms=1_000, grace_period_ms=2_000)
    created = lc_client.create_reservation(body)
    rid = created.body["reservation_id"]
    lc_clock.advance(1_500)
    ext = lc_client.extend_reservation(rid, {"idempotency_key": "e", "extend_by_ms": 1_000})
    assert ext.status == 410 and ext.body["error"] == "RESERVATION_EXPIRED"
    done = lc_client.commit_reservation(
        rid, {"idempotency_key": "c", "actual": {"unit": LC_UNIT, "amount": 300}}
    )
    assert done.status == 200
    # A replay is verbatim except the volatile remaining_ttl_ms: 0 once no longer ACTIVE.
    replay = lc_client.create_reservation(body)
    assert replay.status == 200
    assert replay.body == {**created.body, "remaining_ttl_ms": 0}


def test_eleventh_extension_is_refused(funded: LocalLedger, lc_client: CyclesClient) -> None:
    created = lc_client.create_reservation(reservation_body(10, ttl_ms=60_000))
    rid, expires = created.body["reservation_id"], created.body["expires_at_ms"]
    for n in range(10):
        ext = lc_client.extend_reservation(rid, {"idempotency_key": f"e{n}", "extend_by_ms": 1_000})
        assert ext.status == 200
        assert ext.body["expires_at_ms"] == expires + (n + 1) * 1_000
    replay = lc_client.extend_reservation(rid, {"idempotency_key": "e9", "extend_by_ms": 1_000})
    assert replay.status == 200 and replay.body["expires_at_ms"] == expires + 10_000
    eleventh = lc_client.extend_reservation(rid, {"idempotency_key": "e10", "extend_by_ms": 1_000})
    assert eleventh.status == 409 and eleventh.body["error"] == "MAX_EXTENSIONS_EXCEEDED"


def test_scopes_units_and_missing_budgets(funded: LocalLedger, lc_client: CyclesClient) -> None:
    no_budget = lc_client.create_reservation(
        reservation_body(1, subject={"tenant": "acme"}, unit="TOKENS")
    )
    assert no_budget.status == 400 and no_budget.body["error"] == "UNIT_MISMATCH"
    assert no_budget.body["details"]["expected_units"] == [LC_UNIT]
    funded.create_tenant("initech")
    key = funded.create_api_key("initech")
    assert key
    rid = lc_client.create_reservation(reservation_body(5)).body["reservation_id"]
    wrong_unit = lc_client.commit_reservation(
        rid, {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": "TOKENS", "amount": 1}}
    )
    assert wrong_unit.status == 400 and wrong_unit.body["error"] == "UNIT_MISMATCH"
    missing = lc_client.commit_reservation(
        "rsv_missing", {"idempotency_key": "x", "actual": {"unit": LC_UNIT, "amount": 1}}
    )
    assert missing.status == 404 and missing.body["error"] == "NOT_FOUND"
    # Budgets only at a deeper level: the tenant scope is skipped, the workspace enforces.
    funded.set_budget("tenant:acme/workspace:eu", allocated=50)
    deep = lc_client.create_reservation(
        reservation_body(60, subject={"tenant": "acme", "workspace": "EU", "app": "x"})
    )
    assert deep.status == 409 and deep.body["error"] == "BUDGET_EXCEEDED"
