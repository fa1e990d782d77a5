"""Provider calls with a deadline: results, errors, overruns, and threads reused, never starved."""

from __future__ import annotations

import threading

import pytest

from {{ cookiecutter.package_name }}.budget.provider_deadlines import CallRunner, Overran

PATIENCE_S = 30.0


def test_a_result_or_an_error_comes_back_to_the_caller() -> None:
    runner = CallRunner()
    assert runner.run(lambda: 42, PATIENCE_S) == 42
    with pytest.raises(ZeroDivisionError):
        runner.run(lambda: 1 // 0, PATIENCE_S)


def test_an_overrun_stops_the_wait_and_a_hung_call_delays_no_other() -> None:
    runner = CallRunner()
    release = threading.Event()
    with pytest.raises(Overran):
        runner.run(lambda: release.wait(PATIENCE_S), 0.05)
    # The hung call still holds its thread; the next call gets another one at once.
    assert runner.run(lambda: "next", PATIENCE_S) == "next"
    release.set()


def test_no_time_left_means_no_call_at_all() -> None:
    called: list[bool] = []
    with pytest.raises(Overran):
        CallRunner().run(lambda: called.append(True), 0)
    assert called == []


def test_threads_are_reused_between_calls() -> None:
    runner = CallRunner(name="reuse-check")
    names = {runner.run(threading.get_ident, PATIENCE_S) for _ in range(20)}
    workers = [t for t in threading.enumerate() if t.name == "reuse-check"]
    # Sequential calls need one thread; a racing finish may briefly add a second.
    assert len(workers) <= 2
    assert len(names) <= 2


def test_concurrent_calls_each_get_a_thread() -> None:
    runner = CallRunner(name="concurrent-check")
    barrier = threading.Barrier(5, timeout=PATIENCE_S)
    results: list[int] = []

    def caller() -> None:
        results.append(runner.run(barrier.wait, PATIENCE_S))

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    barrier.wait()  # all four calls run at once, or this never returns
    for thread in callers:
        thread.join(PATIENCE_S)
    # Five parties met at the barrier: the four calls ran side by side.
    assert len(results) == 4 and len(set(results)) == 4
