"""Which scope's caps an answer carries when several scopes have budgets with caps.

The reference reads caps from the budget of the subject's own scope only: ``scope_path``,
the deepest of the affected scopes (reserve.lua's ``HGET budget:<scope_path>:<unit>
caps_json``; decide and dry runs in ``RedisReservationRepository`` read the same key).
Caps on a parent scope do not apply, and a subject whose own scope has no budget gets no
caps. Reserve, dry run and decide, over real HTTP with the runcycles client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from runcycles import CyclesClient, CyclesResponse

from localcycles import LocalLedger
from support.localcycles_kit import reservation_body

PARENT, OWN = "tenant:acme", "tenant:acme/workspace:w1"
SUBJECT = {"tenant": "acme", "workspace": "W1"}  # values are lower-cased into scopes
PARENT_CAPS = {"max_tokens": 10}
OWN_CAPS = {"max_tokens": 256, "tool_denylist": ["shell"]}

Ask = Callable[[CyclesClient], CyclesResponse]
ASKS: dict[str, Ask] = {
    "reserve": lambda c: c.create_reservation(reservation_body(100, subject=SUBJECT)),
    "dry run": lambda c: c.create_reservation(reservation_body(100, subject=SUBJECT, dry_run=True)),
    "decide": lambda c: c.decide(reservation_body(100, subject=SUBJECT)),
}


def answer(lc_client: CyclesClient, ask: str) -> dict[str, Any]:
    response = ASKS[ask](lc_client)
    assert response.status == 200, response.body
    body: dict[str, Any] = response.body
    return body


@pytest.mark.parametrize("ask", sorted(ASKS))
def test_the_subjects_own_scope_gives_the_caps_not_a_parent(
    lc_ledger: LocalLedger, lc_client: CyclesClient, ask: str
) -> None:
    lc_ledger.set_budget(PARENT, allocated=10_000, caps=PARENT_CAPS)
    lc_ledger.set_budget(OWN, allocated=1_000, caps=OWN_CAPS)
    body = answer(lc_client, ask)
    assert (body["decision"], body["caps"]) == ("ALLOW_WITH_CAPS", OWN_CAPS)


@pytest.mark.parametrize("ask", sorted(ASKS))
def test_caps_on_a_parent_only_do_not_apply(
    lc_ledger: LocalLedger, lc_client: CyclesClient, ask: str
) -> None:
    lc_ledger.set_budget(PARENT, allocated=10_000, caps=PARENT_CAPS)
    lc_ledger.set_budget(OWN, allocated=1_000)
    body = answer(lc_client, ask)
    assert body["decision"] == "ALLOW" and "caps" not in body


@pytest.mark.parametrize("ask", sorted(ASKS))
def test_no_caps_when_the_subjects_own_scope_has_no_budget(
    lc_ledger: LocalLedger, lc_client: CyclesClient, ask: str
) -> None:
    lc_ledger.set_budget(PARENT, allocated=10_000, caps=PARENT_CAPS)
    body = answer(lc_client, ask)
    assert body["decision"] == "ALLOW" and "caps" not in body


@pytest.mark.parametrize("ask", sorted(ASKS))
def test_caps_on_the_subjects_own_scope_apply_under_an_uncapped_parent(
    lc_ledger: LocalLedger, lc_client: CyclesClient, ask: str
) -> None:
    lc_ledger.set_budget(PARENT, allocated=10_000)
    lc_ledger.set_budget(OWN, allocated=1_000, caps=OWN_CAPS)
    body = answer(lc_client, ask)
    assert (body["decision"], body["caps"]) == ("ALLOW_WITH_CAPS", OWN_CAPS)
