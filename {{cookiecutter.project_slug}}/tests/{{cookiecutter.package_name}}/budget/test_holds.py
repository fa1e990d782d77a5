"""Holds: settled exactly once, and tied to their request by the id they are given."""

from __future__ import annotations

import threading

from {{ cookiecutter.package_name }}.budget.holds import Hold


def test_exactly_one_caller_claims_the_settlement() -> None:
    # The stream, its closing and the heartbeat may all try to settle the same hold.
    hold = Hold("acme", "chat", 100, "enforce", reservation_id="r1")
    start = threading.Barrier(8)
    claims: list[bool] = []

    def claim() -> None:
        start.wait()
        claims.append(hold.claim_settlement())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == [False] * 7 + [True]
    assert hold.settled and not hold.claim_settlement()


def test_the_request_id_is_the_only_metadata_a_hold_adds() -> None:
    assert Hold("acme", "chat", 1, "shadow", request_id="order-9").request_metadata() == {
        "request_id": "order-9"
    }
    assert Hold("acme", "chat", 1, "unguarded").request_metadata() == {}


def test_only_a_hold_with_a_reservation_holds_anything_and_each_has_its_key() -> None:
    assert Hold("acme", "chat", 1, "enforce", reservation_id="r1").held
    assert not Hold("acme", "chat", 1, "shadow").held
    one, other = Hold("acme", "chat", 1, "shadow"), Hold("acme", "chat", 1, "shadow")
    assert one.charge_key != other.charge_key  # each charge lands once, under its own key
