"""GET /v1/admin/budgets pages as the reference admin server does: ``limit`` (default 50,
brought into [1, 100]), ``cursor`` (the last ledger id of the page before, ``next_cursor``),
``sort_by`` / ``sort_dir`` (utilization, descending, unless told; ledger id breaks ties)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from localcycles.ledger.local_ledger import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, LC_UNIT

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}


def make_budgets(ledger: LocalLedger, count: int) -> list[str]:
    """``count`` budgets of ``acme`` (and one of another tenant), their scopes in order."""
    ledger.create_tenant(LC_TENANT)
    ledger.create_tenant("acme2")
    ledger.set_budget("tenant:acme2", LC_UNIT, allocated=5)  # shares the prefix "tenant:acme"
    scopes = [f"tenant:acme/agent:user-{n:03d}" for n in range(count)]
    for scope in scopes:
        ledger.set_budget(scope, LC_UNIT, allocated=1_000)
    return scopes


def page(http: httpx.Client, **params: Any) -> dict[str, Any]:
    answer = http.get(
        "/v1/admin/budgets",
        params={"tenant_id": LC_TENANT, "scope_prefix": "tenant:acme/", **params},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_pages_follow_each_other_to_the_end(
    lc_http: httpx.Client, lc_ledger: LocalLedger
) -> None:
    scopes = make_budgets(lc_ledger, 7)
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    params: dict[str, Any] = {"sort_by": "scope", "sort_dir": "asc", "limit": 3}
    while True:
        body = page(lc_http, **params)
        rows = body["ledgers"]
        seen += [row["scope"] for row in rows]
        pages.append((len(rows), body["has_more"]))
        if not body["has_more"]:
            assert "next_cursor" not in body
            break
        assert body["next_cursor"] == rows[-1]["ledger_id"]
        params["cursor"] = body["next_cursor"]
    assert pages == [(3, True), (3, True), (1, False)]
    assert seen == scopes


def test_the_page_size_is_fifty_by_default_and_at_most_a_hundred(
    lc_http: httpx.Client, lc_ledger: LocalLedger
) -> None:
    make_budgets(lc_ledger, 105)
    assert len(page(lc_http)["ledgers"]) == 50
    most = page(lc_http, limit=500)
    assert (len(most["ledgers"]), most["has_more"]) == (100, True)
    assert len(page(lc_http, limit=0)["ledgers"]) == 1
    assert len(page(lc_http, limit=-3)["ledgers"]) == 1


def test_the_default_order_is_utilization_descending_then_ledger_id(
    lc_http: httpx.Client, lc_ledger: LocalLedger
) -> None:
    scopes = make_budgets(lc_ledger, 4)
    # Utilization is spent / allocated: 0.1, 0.09 (the most spent), 0 and 0.5.
    figures = ((1_000, 100), (10_000, 900), (1_000, 0), (1_000, 500))
    for scope, (allocated, spent) in zip(scopes, figures, strict=True):
        funded = lc_http.post(
            "/v1/admin/budgets/fund",
            params={"tenant_id": LC_TENANT, "scope": scope, "unit": LC_UNIT},
            json={
                "operation": "RESET_SPENT",
                "amount": {"unit": LC_UNIT, "amount": allocated},
                "spent": {"unit": LC_UNIT, "amount": spent},
            },
            headers=ADMIN,
        )
        assert funded.status_code == 200, funded.text
    listed = [row["scope"] for row in page(lc_http)["ledgers"]]
    assert listed == [scopes[3], scopes[0], scopes[1], scopes[2]]
    ascending = [row["scope"] for row in page(lc_http, sort_dir="asc")["ledgers"]]
    assert ascending == listed[::-1]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "no-such-ledger"},
        {"limit": "ten"},
        {"sort_by": "spent"},
        {"sort_dir": "sideways"},
    ],
)
def test_a_bad_page_request_is_refused(
    lc_http: httpx.Client, lc_ledger: LocalLedger, params: dict[str, str]
) -> None:
    make_budgets(lc_ledger, 2)
    answer = lc_http.get(
        "/v1/admin/budgets", params={"tenant_id": LC_TENANT, **params}, headers=ADMIN
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_REQUEST"
