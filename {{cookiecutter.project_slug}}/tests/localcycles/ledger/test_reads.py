"""The ledger's reads over real HTTP with the runcycles client: reservation and balance
pages that add up to the whole list, filters by subject, cursors bound to their query."""

from __future__ import annotations

import httpx
import pytest
from runcycles import CyclesClient

from localcycles import LocalLedger
from support.localcycles_kit import FakeClock, reservation_body

WORKSPACES = ("tenant:acme/workspace:w1", "tenant:acme/workspace:w2")


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    for scope in WORKSPACES:
        lc_ledger.set_budget(scope, allocated=1_000)
    return lc_ledger


def test_reservation_pages_add_up_to_the_list_in_order_without_repeats(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock
) -> None:
    made = []
    for amount in range(10, 15):
        created = lc_client.create_reservation(reservation_body(amount))
        made.append(created.body["reservation_id"])
        lc_clock.advance(1)  # one creation time each: the order is the order of creation
    seen: list[str] = []
    params = {"limit": "2", "sort_dir": "asc"}
    for _ in range(len(made)):
        page = lc_client.list_reservations(**params)
        assert page.status == 200, page.body
        seen += [row["reservation_id"] for row in page.body["reservations"]]
        if not page.body["has_more"]:
            assert "next_cursor" not in page.body
            break
        params = {**params, "cursor": page.body["next_cursor"]}
    assert seen == made


def test_a_reservation_cursor_only_continues_its_own_query(
    funded: LocalLedger, lc_client: CyclesClient
) -> None:
    for amount in (10, 20, 30):
        lc_client.create_reservation(reservation_body(amount))
    first = lc_client.list_reservations(limit="1", sort_dir="asc")
    cursor = first.body["next_cursor"]
    changed = lc_client.list_reservations(limit="1", sort_dir="desc", cursor=cursor)
    assert changed.status == 400 and changed.body["error"] == "INVALID_REQUEST"
    assert lc_client.list_reservations(limit="1", sort_dir="asc", cursor=cursor).status == 200


def test_balances_filter_by_workspace_and_page_by_scope(
    funded: LocalLedger, lc_client: CyclesClient
) -> None:
    one = lc_client.get_balances(workspace="w1")
    assert one.status == 200, one.body
    assert [row["scope_path"] for row in one.body["balances"]] == [WORKSPACES[0]]
    assert one.body["balances"][0]["allocated"]["amount"] == 1_000

    seen: list[str] = []
    params = {"tenant": "acme", "limit": "1"}
    for _ in range(4):
        page = lc_client.get_balances(**params)
        assert page.status == 200, page.body
        seen += [row["scope_path"] for row in page.body["balances"]]
        if not page.body["has_more"]:
            break
        params = {**params, "cursor": page.body["next_cursor"]}
    assert seen == ["tenant:acme", *WORKSPACES]


def test_balances_need_a_subject_filter(
    funded: LocalLedger, lc_http: httpx.Client, lc_api_key: str
) -> None:
    # runcycles refuses this before sending it; another client may not.
    answer = lc_http.get("/v1/balances", headers={"X-Cycles-API-Key": lc_api_key})
    assert answer.status_code == 400 and answer.json()["error"] == "INVALID_REQUEST"
