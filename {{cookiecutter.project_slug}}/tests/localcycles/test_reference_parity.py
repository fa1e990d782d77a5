"""Behaviours the reference runtime and admin servers' own tests show, matched here: the
reservation TTL cap, balances on extend, the over-limit flag after operator changes, and
the public readiness probe."""

from __future__ import annotations

import httpx
import pytest
from runcycles import CyclesClient
from runcycles.models import ReservationExtendResponse

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_UNIT, FakeClock, reservation_body

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
HOUR_MS = 3_600_000


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    return lc_ledger


@pytest.mark.parametrize(("asked", "granted"), [(HOUR_MS, HOUR_MS), (86_400_000, HOUR_MS)])
def test_a_ttl_above_the_maximum_is_capped_not_refused(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock, asked: int, granted: int
) -> None:
    created = lc_client.create_reservation(reservation_body(10, ttl_ms=asked))
    assert created.status == 200, created.body
    assert created.body["expires_at_ms"] == lc_clock.now_ms + granted
    assert created.body["remaining_ttl_ms"] == granted
    lc_clock.advance(granted + 5_001)  # past the default grace: the hold is back
    assert (funded.budget("tenant:acme") or {})["reserved"] == 0


def test_the_extend_answer_carries_the_budgets_balances(
    funded: LocalLedger, lc_client: CyclesClient
) -> None:
    funded.set_budget("tenant:acme/workspace:prod", allocated=500)
    subject = {"tenant": "acme", "workspace": "prod"}
    rid = lc_client.create_reservation(reservation_body(100, subject=subject)).body[
        "reservation_id"
    ]
    extended = lc_client.extend_reservation(rid, {"idempotency_key": "e", "extend_by_ms": 1_000})
    assert extended.status == 200
    balances = ReservationExtendResponse.model_validate(extended.body).balances
    assert balances is not None
    by_scope = {b.scope_path: (b.reserved.amount, b.remaining.amount) for b in balances}
    assert by_scope == {
        "tenant:acme": (100, 9_900),
        "tenant:acme/workspace:prod": (100, 400),
    }


def test_debt_over_a_limit_lowered_to_zero_is_over_limit_until_repaid(
    funded: LocalLedger, lc_client: CyclesClient, lc_http: httpx.Client
) -> None:
    """The reference's budget update and funding recompute ``is_over_limit`` as
    ``debt > overdraft_limit``; reserve then answers OVERDRAFT_LIMIT_EXCEEDED."""
    funded.set_budget("tenant:acme", allocated=1_000, overdraft_limit=500)
    rid = lc_client.create_reservation(
        reservation_body(1_000, overage_policy="ALLOW_WITH_OVERDRAFT")
    ).body["reservation_id"]
    done = lc_client.commit_reservation(
        rid, {"idempotency_key": "c", "actual": {"unit": LC_UNIT, "amount": 1_200}}
    )
    assert done.status == 200 and (funded.budget("tenant:acme") or {})["debt"] == 200
    where = {"scope": "tenant:acme", "unit": LC_UNIT}

    patched = lc_http.patch(
        "/v1/admin/budgets",
        params=where,
        json={"overdraft_limit": {"unit": LC_UNIT, "amount": 0}},
        headers=ADMIN,
    )
    assert patched.status_code == 200 and patched.json()["is_over_limit"] is True
    blocked = lc_client.create_reservation(reservation_body(1))
    assert blocked.status == 409 and blocked.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    denied = lc_client.decide(reservation_body(1))
    assert denied.body["reason_code"] == "OVERDRAFT_LIMIT_EXCEEDED"

    # A credit leaves the debt, so the scope stays over its limit; repaying clears it.
    credit = {"operation": "CREDIT", "amount": {"unit": LC_UNIT, "amount": 5_000}}
    fund = "/v1/admin/budgets/fund"
    assert lc_http.post(fund, params=where, json=credit, headers=ADMIN).status_code == 200
    assert lc_client.create_reservation(reservation_body(1)).status == 409
    repay = {"operation": "REPAY_DEBT", "amount": {"unit": LC_UNIT, "amount": 200}}
    repaid = lc_http.post(fund, params=where, json=repay, headers=ADMIN)
    assert repaid.status_code == 200 and repaid.json()["new_debt"]["amount"] == 0
    assert lc_client.create_reservation(reservation_body(1)).status == 200


@pytest.mark.parametrize("path", ["/actuator/health/readiness", "/actuator/health/liveness"])
def test_the_reference_health_probes_answer_without_credentials(
    lc_http: httpx.Client, path: str
) -> None:
    resp = lc_http.get(path)
    assert resp.status_code == 200 and resp.json() == {"status": "UP"}
