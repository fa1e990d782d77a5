"""Releasing holds whose reserve answer was lost: retried while the hold could be live, then
let go (Cycles returns an expired hold's budget itself). Driven by a clock moved by hand."""

from __future__ import annotations

import itertools

from {{ cookiecutter.package_name }}.budget.lost_reserves import MAX_RETRY_S, LostReserve, LostReserves


def drive(succeed_on: int | None, lapses_at: float) -> tuple[list[float], LostReserves]:
    """Run one lost hold to the end; the clock times of its attempts."""
    now = [0.0]
    attempts: list[float] = []

    def recover(lost: LostReserve) -> bool:
        attempts.append(now[0])
        return len(attempts) == succeed_on

    lost_reserves = LostReserves(recover, clock=lambda: now[0], background=False)
    lost_reserves.add(LostReserve("acme", {}, lapses_at))
    while (wait := lost_reserves.run_due()) is not None:
        now[0] += wait
    return attempts, lost_reserves


def test_a_lost_hold_is_retried_with_growing_pauses_until_it_would_have_lapsed() -> None:
    attempts, lost_reserves = drive(succeed_on=None, lapses_at=30.0)
    assert attempts[0] == 0.0  # at once, off the request path
    pauses = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(pauses) >= 5
    assert pauses == sorted(pauses) and max(pauses) == MAX_RETRY_S
    assert attempts[-1] < 30.0 <= attempts[-1] + MAX_RETRY_S  # tried until the hold lapsed
    assert lost_reserves.pending() == 0


def test_a_released_hold_is_not_tried_again() -> None:
    attempts, lost_reserves = drive(succeed_on=3, lapses_at=30.0)
    assert len(attempts) == 3
    assert lost_reserves.pending() == 0


def test_nothing_is_tried_after_close() -> None:
    lost_reserves = LostReserves(lambda lost: False, background=False)
    lost_reserves.close()
    lost_reserves.add(LostReserve("acme", {}, lapses_at=1e12))
    assert lost_reserves.pending() == 0
