"""The hold keeper on a clock moved by hand: streams stuck on a write are ended in time.

(Extensions through a real Cycles server are driven in web/test_guard_holds.py and
web/test_streaming_stalled_clients.py.)
"""

from __future__ import annotations

import threading

from {{ cookiecutter.package_name }}.budget.hold_keeper import EndReason, HoldKeeper
from {{ cookiecutter.package_name }}.budget.holds import Hold


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keeper_on(
    clock: Clock, *, settle_lead_s: float = 0.0, write_timeout_s: float | None = None
) -> HoldKeeper:
    """A keeper whose extensions all succeed, without a thread: the test calls run_due."""
    return HoldKeeper(
        lambda hold: True,
        ttl_ms=60_000,
        lead_s=10,
        settle_lead_s=settle_lead_s,
        write_timeout_s=write_timeout_s,
        clock=clock,
        background=False,
    )


def test_a_write_that_waits_longer_than_the_timeout_ends_the_stream() -> None:
    clock = Clock()
    keeper = keeper_on(clock, write_timeout_s=5.0)
    hold = Hold("acme", "chat", 1, "enforce", reservation_id="r1", expires_at=1_000.0)
    ended: list[EndReason] = []
    cuts: list[str] = []
    writes = keeper.follow(hold, ended.append, lambda: cuts.append("cut"))  # born waiting
    clock.now = 4.9
    keeper.run_due()
    assert ended == [] and cuts == []
    clock.now = 5.0
    keeper.run_due()
    assert ended == ["write_stalled"] and cuts == ["cut"]
    assert not writes.taken()  # the stream must produce nothing more


def test_a_stream_that_takes_its_chunks_is_never_ended() -> None:
    clock = Clock()
    keeper = keeper_on(clock, write_timeout_s=5.0)
    hold = Hold("acme", "chat", 1, "enforce", reservation_id="r1", expires_at=1_000.0)
    ended: list[EndReason] = []
    writes = keeper.follow(hold, ended.append)
    for step in range(1, 20):
        clock.now = step * 4.0
        assert writes.taken()  # the server took the last chunk and asks for the next
        keeper.run_due()
        writes.handing_over()
    assert ended == []
    keeper.unfollow(writes)
    assert keeper.following() == 0


def test_a_waiting_stream_is_ended_while_its_hold_still_covers_one_commit() -> None:
    clock = Clock()
    keeper = keeper_on(clock, settle_lead_s=2.0)  # no write timeout: only the hold decides
    hold = Hold("acme", "chat", 1, "enforce", reservation_id="r1", expires_at=10.0)
    ended: list[EndReason] = []
    keeper.follow(hold, ended.append)
    clock.now = 7.9
    assert keeper.run_due() == 8.0  # it knows when to look next
    assert ended == []
    clock.now = 8.0
    keeper.run_due()
    assert ended == ["hold_lapsing"]


def test_holds_that_fall_due_together_are_extended_side_by_side() -> None:
    # Streams started together fall due together; one extension after the other, the last
    # could lapse first on a busy worker. Each extension here waits until 4 run at once.
    clock = Clock()
    together = threading.Barrier(4, timeout=30)
    extended: list[str] = []

    def extend(hold: Hold) -> bool:
        together.wait()
        extended.append(str(hold.reservation_id))
        return True

    keeper = HoldKeeper(
        extend, ttl_ms=60_000, lead_s=10, clock=clock, background=False, concurrency=4
    )
    holds = [
        Hold("acme", "chat", 1, "enforce", reservation_id=f"r{i}", expires_at=60.0)
        for i in range(4)
    ]
    for hold in holds:
        keeper.watch(hold)
    clock.now = 50.0
    try:
        keeper.run_due()
    finally:
        keeper.close()
    assert sorted(extended) == ["r0", "r1", "r2", "r3"]
