"""Paging GET /v1/reservations neither repeats nor skips a row, while the list changes.

The reference (cycles-server ``RedisReservationQueryRepository`` with ``SortedListCursor``
and ``ReservationComparators``) orders by the sort key, then ``reservation_id`` ascending
in both directions, and its cursor carries the last row's sort value and id: the next page
starts after that row, wherever it now is. So rows created or finalized between two pages
shift nothing: no row of the list as it stood is seen twice or missed. Over real HTTP with
the runcycles client, on a clock the test moves.
"""

from __future__ import annotations

from typing import Any

import pytest
from runcycles import CyclesClient

from localcycles import LocalLedger
from support.localcycles_kit import LC_UNIT, FakeClock, reservation_body

PAGE = 2
MAX_PAGES = 20  # more than any list here needs


@pytest.fixture
def funded(lc_ledger: LocalLedger, lc_api_key: str) -> LocalLedger:
    lc_ledger.set_budget("tenant:acme", allocated=1_000_000)
    return lc_ledger


def reserve(client: CyclesClient, clock: FakeClock, count: int, *, tick: int = 1) -> list[str]:
    """``count`` reservations, ``tick`` ms apart (0: all created in the same millisecond)."""
    made = []
    for _ in range(count):
        created = client.create_reservation(reservation_body(10))
        assert created.status == 200, created.body
        made.append(created.body["reservation_id"])
        clock.advance(tick)
    return made


def rest(client: CyclesClient, params: dict[str, str], cursor: str | None) -> list[str]:
    """Every row after ``cursor``, page by page; a cursor that never ends fails the test."""
    seen: list[str] = []
    for _ in range(MAX_PAGES):
        if cursor is None:
            return seen
        rows, cursor = page(client, {**params, "cursor": cursor})
        seen += rows
    raise AssertionError(f"still more pages after {MAX_PAGES}: {seen}")


def page(client: CyclesClient, params: dict[str, str]) -> tuple[list[str], str | None]:
    answer = client.list_reservations(**params)
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.body
    assert body["has_more"] == ("next_cursor" in body)
    return [row["reservation_id"] for row in body["reservations"]], body.get("next_cursor")


def test_rows_created_between_pages_shift_nothing(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock
) -> None:
    made = reserve(lc_client, lc_clock, 5)
    newest_first = made[::-1]  # the default order: created_at_ms descending
    seen, cursor = page(lc_client, {"limit": str(PAGE)})
    assert seen == newest_first[:PAGE] and cursor is not None
    reserve(lc_client, lc_clock, 3)  # newer rows: they sort before the cursor
    seen += rest(lc_client, {"limit": str(PAGE)}, cursor)
    assert seen == newest_first


def test_rows_leaving_a_filter_between_pages_skip_nothing(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock
) -> None:
    made = reserve(lc_client, lc_clock, 6)
    params = {"limit": str(PAGE), "status": "ACTIVE", "sort_dir": "asc"}
    seen, cursor = page(lc_client, params)
    assert seen == made[:PAGE] and cursor is not None
    for reservation_id in seen:  # the first page leaves the ACTIVE list
        actual = {"unit": LC_UNIT, "amount": 5}
        committed = lc_client.commit_reservation(
            reservation_id, {"idempotency_key": f"c-{reservation_id}", "actual": actual}
        )
        assert committed.status == 200, committed.body
    seen += rest(lc_client, params, cursor)
    assert seen == made


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_rows_with_one_sort_value_page_by_id_ascending(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock, sort_dir: str
) -> None:
    made = reserve(lc_client, lc_clock, 5, tick=0)  # one created_at_ms for all of them
    params = {"limit": str(PAGE), "sort_by": "created_at_ms", "sort_dir": sort_dir}
    seen, cursor = page(lc_client, params)
    seen += rest(lc_client, params, cursor)
    assert seen == sorted(made)  # the reference's tie-break, whichever the direction


@pytest.mark.parametrize(
    ("sort_by", "sort_dir"),
    [("reserved", "desc"), ("reserved", "asc"), ("reservation_id", "desc"), ("status", "asc")],
)
def test_every_sort_pages_through_the_whole_list_once(
    funded: LocalLedger, lc_client: CyclesClient, lc_clock: FakeClock, sort_by: str, sort_dir: str
) -> None:
    for amount in (30, 10, 20, 10, 30, 20, 10):
        lc_client.create_reservation(reservation_body(amount))
        lc_clock.advance(1)
    params = {"limit": str(PAGE), "sort_by": sort_by, "sort_dir": sort_dir}
    whole, cursor = page(lc_client, {**params, "limit": "200"})
    assert cursor is None and len(whole) == 7
    seen, cursor = page(lc_client, params)
    seen += rest(lc_client, params, cursor)
    assert seen == whole
