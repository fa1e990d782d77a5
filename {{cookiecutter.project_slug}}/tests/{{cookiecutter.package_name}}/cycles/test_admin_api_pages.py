"""Listing budgets through the admin API (``admin_api.list_budgets``): every page is read,
in an order spending cannot change, and a server that never ends its pages is an error."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import click
import httpx
import pytest

from conftest import (
    ADMIN_KEY,
    CyclesStub,
    Provisioner,
    StubReply,
    StubRequest,
    budget_scope,
    cycles_tenant_of,
    forward_to,
)
from {{ cookiecutter.package_name }}.cycles import admin_api
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from localcycles import LocalCyclesServer

UNIT = "USD_MICROCENTS"


def end_users(server: LocalCyclesServer, count: int, spent: int = 0) -> list[str]:
    """``count`` end-user budgets under acme's, each having spent ``spent`` of 1,000."""
    scopes = [f"{budget_scope('acme')}/agent:user-{n:03d}" for n in range(count)]
    for scope in scopes:
        server.ledger.set_budget(scope, UNIT, allocated=1_000)
        if spent:
            answer = httpx.post(
                f"{server.base_url}/v1/admin/budgets/fund",
                params={"tenant_id": cycles_tenant_of("acme"), "scope": scope, "unit": UNIT},
                json={
                    "operation": "RESET_SPENT",
                    "amount": {"unit": UNIT, "amount": 1_000},
                    "spent": {"unit": UNIT, "amount": spent},
                },
                headers={"X-Admin-API-Key": ADMIN_KEY},
            )
            assert answer.status_code == 200, answer.text
    return scopes


def test_every_page_is_read_once_in_scope_order(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[..., CyclesStub],
) -> None:
    scopes = end_users(cycles_server, 230)
    recorder = cycles_stub(forward_to(cycles_server.base_url))
    admin = Endpoint(recorder.base_url, {"X-Admin-API-Key": ADMIN_KEY})
    listed = admin_api.list_budgets(admin, cycles_tenant_of("acme"), budget_scope("acme"))
    assert [row["scope"] for row in listed] == [budget_scope("acme"), *scopes]
    queries = [parse_qs(urlsplit(request.path).query) for request in recorder.requests]
    assert len(queries) == 3  # 100 + 100 + 31
    assert [query.get("cursor") for query in queries] == [
        None,
        [listed[99]["ledger_id"]],
        [listed[199]["ledger_id"]],
    ]
    assert all(q["sort_by"] == ["scope"] and q["sort_dir"] == ["asc"] for q in queries)


def test_a_budget_is_found_however_many_budgets_below_it_spent_more(
    cycles_server: LocalCyclesServer, provisioner: Provisioner
) -> None:
    """By the server's default order (utilization, descending) the tenant's budget, having
    spent nothing, would come after 120 end users that have: past the first page."""
    end_users(cycles_server, 120, spent=500)
    admin = Endpoint(cycles_server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
    found = admin_api.find_budget(admin, cycles_tenant_of("acme"), budget_scope("acme"))
    assert found is not None and found["scope"] == budget_scope("acme")


@pytest.mark.parametrize("cursor", [None, "", "the-same-cursor"])
def test_a_server_that_never_ends_its_pages_is_an_error(
    cycles_stub: Callable[..., CyclesStub], cursor: str | None
) -> None:
    body = {"ledgers": [], "has_more": True, **({"next_cursor": cursor} if cursor else {})}
    asked: list[StubRequest] = []

    def endless(request: StubRequest) -> StubReply:
        asked.append(request)  # it gives up after 5 pages: a looping client is not hung
        return StubReply(200, body if len(asked) < 5 else {"ledgers": [], "has_more": False})

    admin = Endpoint(cycles_stub(endless).base_url, {"X-Admin-API-Key": ADMIN_KEY})
    with pytest.raises(click.ClickException, match="has_more without a new next_cursor"):
        admin_api.list_budgets(admin, "acme", "tenant:acme")
    assert len(asked) <= 2
