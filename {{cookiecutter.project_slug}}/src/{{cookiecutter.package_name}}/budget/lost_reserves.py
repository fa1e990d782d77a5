"""Holds whose reserve answer was lost: found again and released, off the request path.

A reserve whose answer came back garbled, cut off, half-sent or too late may still have
created the reservation at Cycles. The request rightly answers 503, but nothing would ever
commit or release that hold, so its budget would stay locked until the TTL lapses. The
protocol makes a create sent again with the same idempotency key and body answer with the
original reservation (same ``reservation_id``), so the create is sent again here and what it
names is released. If the first attempt never reached Cycles, the replay creates the hold
and the release returns it at once: either way nothing stays held. A hold the app cannot use
(too little time left to call the provider) comes here with its id and is just released.

One thread serves the app, started with the first lost hold. Each hold is tried at once,
then with a growing pause, for as long as it could still be live (its TTL); after that Cycles
has returned the budget itself. The clock is injectable and :meth:`LostReserves.run_due` does
one pass, so tests can drive it without waiting.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runcycles import CyclesClient

from ..cycles.errors import is_unavailable

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0


@dataclass(eq=False)
class LostReserve:
    """A hold Cycles may keep that no request will ever settle."""

    tenant: str
    create_body: dict[str, Any]  # the create exactly as sent: same idempotency key, same body
    lapses_at: float  # on the keeper's clock: the hold is gone by then in any case
    reservation_id: str | None = None  # known when the answer arrived but was not usable
    release_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    attempts: int = 0


# One attempt to find and release the hold: True once nothing is held any more.
Recover = Callable[[LostReserve], bool]


class LostReserves:
    """The app's lost holds, each retried on one background thread until released."""

    def __init__(
        self,
        recover: Recover,
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``background=False`` starts no thread: the owner (a test) calls :meth:`run_due`."""
        self._recover = recover
        self._clock = clock
        self._background = background
        self._due: dict[LostReserve, float] = {}
        self._busy = 0  # attempts in progress
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, lost: LostReserve) -> None:
        """Find and release ``lost`` in the background, starting now."""
        with self._wake:
            if self._closed:
                return
            self._due[lost] = self._clock()
            if self._thread is None and self._background:
                self._thread = threading.Thread(
                    target=self._loop, name="cycles-lost-reserves", daemon=True
                )
                self._thread.start()
            self._wake.notify_all()

    def pending(self) -> int:
        with self._wake:
            return len(self._due) + self._busy

    def run_due(self) -> float | None:
        """Make every attempt that is due; the seconds until the next one (None: none left)."""
        with self._wake:
            now = self._clock()
            due = [lost for lost, at in self._due.items() if at <= now]
            for lost in due:
                del self._due[lost]
            self._busy += len(due)
        for lost in due:
            done = False
            try:
                done = self._attempt(lost)
            finally:
                with self._wake:
                    self._busy -= 1
                    doubled = FIRST_RETRY_S * 2 ** min(lost.attempts - 1, 16)  # (no overflow)
                    delay = min(MAX_RETRY_S, doubled)
                    at = self._clock() + delay
                    # Past lapses_at the hold is gone and its budget back: nothing to do.
                    if not done and at < lost.lapses_at and not self._closed:
                        self._due[lost] = at
                    self._wake.notify_all()
        with self._wake:
            if not self._due:
                return None
            return max(0.0, min(self._due.values()) - self._clock())

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until no hold is waiting to be released; True if none."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while self._due or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
            return True

    def close(self) -> None:
        """Stop; holds still pending lapse at their TTL (their budget returns then)."""
        with self._wake:
            self._closed = True
            left = len(self._due)
            self._due.clear()
            self._wake.notify_all()
        if left:
            log.warning("%s Cycles holds with a lost reserve answer lapse at their TTL", left)
        # The thread is a daemon and not waited for: an attempt in flight ends within its
        # call deadline, then the thread sees the close and returns.

    def _attempt(self, lost: LostReserve) -> bool:
        lost.attempts += 1
        try:
            return self._recover(lost)
        except Exception:  # a bug must not end the thread that releases every lost hold
            if not self._closed:  # (once closed, the app's clients are closing too)
                log.exception("Recovering a lost Cycles reserve of %s failed", lost.tenant)
            return False

    def _loop(self) -> None:
        while True:
            self.run_due()
            with self._wake:
                if self._closed:
                    return
                if not self._due:
                    self._wake.wait()
                    continue
                wait = min(self._due.values()) - self._clock()
                if wait > 0:
                    self._wake.wait(wait)


def release_lost(client_for: Callable[[str], CyclesClient], lost: LostReserve) -> bool:
    """One attempt to release a hold whose reserve answer was lost; True once nothing is
    held any more."""
    client = client_for(lost.tenant)
    if lost.reservation_id is None:
        # The same key and body: Cycles answers with the original reservation (or makes it
        # now, if the first attempt never arrived; it is released just the same).
        replay = client.create_reservation(lost.create_body)
        if not replay.is_success:
            # A 4xx is a verdict (denied, invalid): nothing was held. No answer, a 5xx, a
            # rejected key or a rate limit say nothing yet: try again.
            status = replay.status
            return not (is_unavailable(status) or status in (401, 403, 408, 429))
        body = replay.body if isinstance(replay.body, dict) else {}
        reservation_id = body.get("reservation_id")
        if not isinstance(reservation_id, str):
            return "decision" in body  # a well-formed answer without a hold: nothing held
        lost.reservation_id = reservation_id
    body = {"idempotency_key": lost.release_key, "reason": "reserve_answer_lost"}
    response = client.release_reservation(lost.reservation_id, body)
    if response.is_success or response.status in (404, 409, 410):
        # Released now, or finalized, expired or unknown: either way nothing is held.
        log.info("Released Cycles hold %s (its reserve answer was lost)", lost.reservation_id)
        return True
    return False
