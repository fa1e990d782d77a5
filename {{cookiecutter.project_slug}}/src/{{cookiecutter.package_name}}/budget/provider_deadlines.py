"""Provider calls with a deadline: the request stops waiting when its hold cannot wait longer.

SDK timeouts bound each read, not a whole call, and a provider can ignore them. So a
completion runs on a helper thread and the request waits at most its deadline. A call that
overruns cannot be killed; it keeps its thread until it returns, and the request moves on.

Helper threads are daemons (a hung call never holds up process exit) and are reused:
starting a thread per call costs more, under load, than handing it to an idle one. A new
thread starts only when every existing one is busy, so a hung call never delays another.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Overran(Exception):
    """The call did not finish before its deadline."""


class _Job(Generic[T]):
    def __init__(self, call: Callable[[], T]) -> None:
        self.call = call
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.call()
        except BaseException as exc:  # handed to the waiting request thread
            self.error = exc
        finally:
            self.done.set()


class CallRunner:
    """Runs calls on reusable daemon threads and waits for each at most its deadline."""

    def __init__(self, name: str = "llm-call") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a job
        self._lock = threading.Lock()

    def run(self, call: Callable[[], T], timeout_s: float) -> T:
        """``call()``'s result, or :class:`Overran` after ``timeout_s`` seconds."""
        if timeout_s <= 0:
            raise Overran
        job = _Job(call)
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
        self._jobs.put(job)
        if not job.done.wait(timeout_s):
            raise Overran
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]  # set when no error was raised

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            job.run()
            with self._lock:
                self._idle += 1
