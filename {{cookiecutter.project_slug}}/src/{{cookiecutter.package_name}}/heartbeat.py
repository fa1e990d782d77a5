"""Keeps the holds of live streams from lapsing: one heartbeat thread per app extends them all.

A stream can outlast its reservation's TTL, and a hold that lapses while its call still
runs returns its budget to the pool: another request could then spend it twice. So every
live stream's hold is watched here and extended (``POST .../extend``) well before it runs
out: when less than ``lead_s`` (or half the TTL) is left. The stream itself checks
:meth:`HoldKeeper.time_left` before waiting on the provider and ends early when an
extension failed, so even with Cycles unreachable no call outlives its hold.

One thread serves every stream of the app (a thread per stream costs more than the
extensions do), it starts with the first stream, and it sleeps until the next hold is due.
The clock is injectable and :meth:`run_due` does one pass, so tests drive it without
waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .reservations import Hold

log = logging.getLogger(__name__)

# After a failed extension, try again this much later (while the hold still has time).
RETRY_AFTER_FAILURE_S = 1.0

ExtendHold = Callable[[Hold], bool]


class HoldKeeper:
    def __init__(
        self,
        extend: ExtendHold,
        *,
        ttl_ms: int,
        lead_s: float,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``extend(hold)`` makes one extension, True when Cycles took it.

        ``background=False`` starts no thread: the owner (a test) calls :meth:`run_due`.
        """
        self._background = background
        self._extend = extend
        self._lead_s = max(lead_s, ttl_ms / 2000)
        self._clock = clock
        self._due: dict[Hold, float] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, hold: Hold) -> None:
        """Keep ``hold`` alive until :meth:`forget` (or until Cycles refuses for good)."""
        if not hold.held:
            return
        with self._wake:
            if self._closed:
                return
            self._due[hold] = hold.expires_at - self._lead_s
            if self._thread is None and self._background:
                self._thread = threading.Thread(
                    target=self._loop, name="cycles-heartbeat", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def forget(self, hold: Hold) -> None:
        with self._wake:
            self._due.pop(hold, None)

    def time_left(self, hold: Hold) -> float:
        """Seconds until ``hold`` lapses, on this keeper's clock."""
        return hold.expires_at - self._clock()

    def watching(self) -> int:
        with self._wake:
            return len(self._due)

    def run_due(self) -> float | None:
        """Extend every hold that is due now; return when the next one is due (or None)."""
        now = self._clock()
        with self._wake:
            due = [hold for hold, at in self._due.items() if at <= now]
        for hold in due:
            extended = self._extend(hold)
            with self._wake:
                if hold not in self._due:
                    continue  # settled meanwhile
                if extended:
                    self._due[hold] = hold.expires_at - self._lead_s
                elif hold.extendable:
                    self._due[hold] = self._clock() + RETRY_AFTER_FAILURE_S
                else:
                    del self._due[hold]  # the stream sees time_left shrink and ends
        with self._wake:
            return min(self._due.values(), default=None)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._due.clear()
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            try:
                next_due = self.run_due()
            except Exception:  # a heartbeat must never die silently: log and go on
                log.exception("Cycles heartbeat pass failed")
                next_due = self._clock() + RETRY_AFTER_FAILURE_S
            with self._wake:
                if self._closed:
                    return
                wait = None if next_due is None else max(0.0, next_due - self._clock())
                if wait is None or wait > 0:
                    self._wake.wait(timeout=wait)
