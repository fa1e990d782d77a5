"""Keeps the holds of live streams from lapsing: one heartbeat thread per app extends them all.

A stream can outlast its reservation's TTL, and a hold that lapses while its call still
runs returns its budget to the pool: another request could then spend it twice. So every
live stream's hold is watched here and extended (``POST .../extend``) well before it runs
out: when less than ``lead_s`` (or half the TTL) is left. The stream itself checks
:meth:`HoldKeeper.time_left` before waiting on the provider and ends early when an
extension failed, so even with Cycles unreachable no call outlives its hold.

A stream cannot check anything while the server is writing its last chunk to a client
that stopped reading: its code does not run until the write returns. So the keeper also
follows each stream's writes (:class:`StreamWrites`) and ends a stream that waits on one
write longer than ``write_timeout_s`` (``STREAM_WRITE_TIMEOUT``), or whose hold has only
``settle_lead_s`` left (no extension to be had, time for one commit): the stream's
``on_end`` settles the hold for what was produced, and its connection is cut so the
blocked write fails and the server closes the stream.

One thread serves every stream of the app (a thread per stream costs more than the
extensions do), it starts with the first stream, and it sleeps until the next hold is due.
Holds that fall due together (streams that started together: a gevent worker holds
hundreds) are extended up to ``concurrency`` at a time: one after the other, on a busy
worker, the last of them could otherwise lapse before its turn.
The clock is injectable and :meth:`run_due` does one pass, so tests drive it without
waiting.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from runcycles import CyclesClient

from ..cycles.errors import error_code, non_negative_int
from .holds import Hold

log = logging.getLogger(__name__)

# After a failed extension, try again this much later (while the hold still has time); also
# how soon to look again at a stream that had to end but was busy (not waiting on a write).
RETRY_AFTER_FAILURE_S = 1.0
# Extensions the app's keeper makes at once (its Cycles clients keep 64 connections each).
EXTEND_CONCURRENCY = 16

ExtendHold = Callable[[Hold], bool]
EndReason = Literal["write_stalled", "hold_lapsing"]


class StreamWrites:
    """One stream's writes as the keeper sees them.

    The stream calls :meth:`handing_over` before it yields a chunk to the server and
    :meth:`taken` when the server asks for the next one; in between, the server is writing
    and the stream's code does not run. The stream is born waiting: the server has yet to
    send its headers and first chunk.
    """

    def __init__(
        self,
        hold: Hold,
        on_end: Callable[[EndReason], None],
        cut: Callable[[], None] | None,
        clock: Callable[[], float],
    ) -> None:
        """``on_end(reason)`` settles the hold (on the keeper's thread); ``cut()`` ends the
        connection so that a blocked write fails (None: the server gave no way to)."""
        self.hold = hold
        self._on_end = on_end
        self._cut = cut
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting_since: float | None = clock()
        self.ended: EndReason | None = None  # why the keeper ended the stream

    def handing_over(self) -> None:
        """The stream is about to yield a chunk: the server writes it next."""
        with self._lock:
            self._waiting_since = self._clock()

    def taken(self) -> bool:
        """The server wants the next chunk; False if the keeper ended the stream meanwhile
        (then the stream must not produce more: the hold was settled for what it had)."""
        with self._lock:
            self._waiting_since = None
            return self.ended is None

    def waiting_since(self) -> float | None:
        with self._lock:
            return self._waiting_since

    def end_if_waiting(self, waiting_since_at_most: float, reason: EndReason) -> bool:
        """End the stream if it still waits on a write begun by ``waiting_since_at_most``.

        Decided under the lock :meth:`taken` takes, so the stream cannot resume in between
        and produce more than the settlement covers; the connection is cut under it too, so
        the cut can never hit a later request on a kept-alive connection.
        """
        with self._lock:
            since = self._waiting_since
            if self.ended is not None or since is None or since > waiting_since_at_most:
                return False
            self.ended = reason
            if self._cut is not None:
                self._cut()
            return True

    def settle(self, reason: EndReason) -> None:
        self._on_end(reason)


class HoldKeeper:
    def __init__(
        self,
        extend: ExtendHold,
        *,
        ttl_ms: int,
        lead_s: float,
        settle_lead_s: float = 0.0,
        write_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        concurrency: int = 1,
    ) -> None:
        """``extend(hold)`` makes one extension, True when Cycles took it; ``concurrency``
        extensions may run at once (each on a helper thread when more than one is due).

        ``settle_lead_s``: how long before its hold lapses a stream waiting on a write is
        ended and settled (the app passes the time one commit can take, with margin).
        ``write_timeout_s``: how long one write may wait (None: as long as the hold lasts).
        ``background=False`` starts no thread: the owner (a test) calls :meth:`run_due`.
        """
        self._background = background
        self._extend = extend
        self._lead_s = max(lead_s, ttl_ms / 2000)
        self._settle_lead_s = settle_lead_s
        self._write_timeout_s = write_timeout_s
        self._clock = clock
        self._due: dict[Hold, float] = {}
        self._streams: dict[StreamWrites, None] = {}  # insertion-ordered set
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._concurrency = max(1, concurrency)
        self._helpers: ThreadPoolExecutor | None = None

    def watch(self, hold: Hold) -> None:
        """Keep ``hold`` alive until :meth:`forget` (or until Cycles refuses for good)."""
        if not hold.held:
            return
        with self._wake:
            if self._closed:
                return
            self._due[hold] = hold.expires_at - self._lead_s
            self._start()

    def follow(
        self,
        hold: Hold,
        on_end: Callable[[EndReason], None],
        cut: Callable[[], None] | None = None,
    ) -> StreamWrites:
        """Follow the writes of ``hold``'s stream until :meth:`unfollow`."""
        writes = StreamWrites(hold, on_end, cut, self._clock)
        with self._wake:
            if not self._closed:
                self._streams[writes] = None
                self._start()
        return writes

    def unfollow(self, writes: StreamWrites) -> None:
        with self._wake:
            self._streams.pop(writes, None)

    def forget(self, hold: Hold) -> None:
        """Stop extending ``hold`` (it was settled); its stream's writes are still followed."""
        with self._wake:
            self._due.pop(hold, None)

    def time_left(self, hold: Hold) -> float:
        """Seconds until ``hold`` lapses, on this keeper's clock."""
        return hold.expires_at - self._clock()

    def watching(self) -> int:
        """How many holds are being kept alive (extended)."""
        with self._wake:
            return len(self._due)

    def following(self) -> int:
        """How many streams' writes are being followed."""
        with self._wake:
            return len(self._streams)

    def run_due(self) -> float | None:
        """Extend every hold that is due now and end every stream that must end; return
        when the next look is due (or None)."""
        now = self._clock()
        with self._wake:
            due = [hold for hold, at in self._due.items() if at <= now]
        for hold, extended in zip(due, self._extend_all(due), strict=True):
            with self._wake:
                if hold not in self._due:
                    continue  # settled meanwhile
                if extended:
                    self._due[hold] = hold.expires_at - self._lead_s
                elif hold.extendable:
                    self._due[hold] = self._clock() + RETRY_AFTER_FAILURE_S
                else:
                    # No more extensions: the stream sees time_left shrink and ends, or,
                    # waiting on a write, is ended below before the hold lapses.
                    del self._due[hold]
        self._end_stuck_streams()
        now = self._clock()
        with self._wake:
            looks = [*self._due.values(), *(self._next_look(w, now) for w in self._streams)]
        return min((at for at in looks if at is not None), default=None)

    def _extend_all(self, due: list[Hold]) -> list[bool]:
        if self._closed:  # closing: nothing is kept any more (and the helpers are gone)
            return [False] * len(due)
        if self._concurrency == 1 or len(due) < 2:
            return [self._extend(hold) for hold in due]
        if self._helpers is None:
            self._helpers = ThreadPoolExecutor(self._concurrency, "cycles-heartbeat-extend")
        return list(self._helpers.map(self._extend, due))

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._due.clear()
            self._streams.clear()
            self._wake.notify()
        if self._helpers is not None:
            self._helpers.shutdown(wait=False)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- streams --------------------------------------------------------------------------

    def _end_stuck_streams(self) -> None:
        now = self._clock()
        with self._wake:
            streams = list(self._streams)
        for writes in streams:
            reason: EndReason | None = None
            waiting_since_at_most = now
            if self._must_settle(writes.hold, now):
                reason = "hold_lapsing"
            elif self._write_timeout_s is not None:
                reason, waiting_since_at_most = "write_stalled", now - self._write_timeout_s
            if reason is None or not writes.end_if_waiting(waiting_since_at_most, reason):
                continue
            try:
                writes.settle(reason)
            except Exception:  # one stream's failure must not stop the others being ended
                log.exception("Settling a stream ended by the keeper failed")

    def _must_settle(self, hold: Hold, now: float) -> bool:
        """The hold must be settled now: only time for one commit is left."""
        return hold.held and not hold.settled and hold.expires_at - now <= self._settle_lead_s

    def _next_look(self, writes: StreamWrites, now: float) -> float | None:
        if writes.ended is not None:
            return None  # ended: nothing more to do but wait for the server to close it
        looks = []
        hold = writes.hold
        if hold.held and not hold.settled:
            settle_at = hold.expires_at - self._settle_lead_s
            # Past it, the stream was busy (not waiting on a write): look again soon.
            looks.append(settle_at if settle_at > now else now + RETRY_AFTER_FAILURE_S)
        if self._write_timeout_s is not None:
            since = writes.waiting_since()
            # Not waiting now: a write that begins later is stuck a timeout after it began;
            # looking every half timeout finds it at most half a timeout late.
            looks.append(
                since + self._write_timeout_s
                if since is not None
                else now + self._write_timeout_s / 2
            )
        return min(looks, default=None)

    # --- the thread -----------------------------------------------------------------------

    def _start(self) -> None:
        """Start the thread if needed and wake it (called with ``self._wake`` held)."""
        if self._thread is None and self._background:
            self._thread = threading.Thread(target=self._loop, name="cycles-heartbeat", daemon=True)
            self._thread.start()
        self._wake.notify()

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


# --- one extension --------------------------------------------------------------------


# Extension failures that can never succeed later: the heartbeat stops trying.
PERMANENT_EXTEND_FAILURES = frozenset(
    {
        "RESERVATION_EXPIRED",
        "RESERVATION_FINALIZED",
        "MAX_EXTENSIONS_EXCEEDED",
        "NOT_FOUND",
        "TENANT_CLOSED",
    }
)


def extend_hold(client_for: Callable[[str], CyclesClient], hold: Hold, ttl_ms: int) -> bool:
    """Push ``hold``'s expiry out by ``ttl_ms``; True when Cycles took the extension."""
    if not hold.held or hold.settled:
        return False
    assert hold.reservation_id is not None
    body = {"idempotency_key": str(uuid.uuid4()), "extend_by_ms": ttl_ms}
    sent_at = time.monotonic()
    response = client_for(hold.tenant).extend_reservation(hold.reservation_id, body)
    result = response.body if isinstance(response.body, dict) else {}
    if response.is_success and result.get("status") == "ACTIVE":
        remaining = non_negative_int(result.get("remaining_ttl_ms"))
        # Without the server's remaining time, assume the extension added exactly one TTL.
        hold.expires_at = (
            hold.expires_at + ttl_ms / 1000 if remaining is None else sent_at + remaining / 1000
        )
        hold.extensions += 1
        return True
    code = error_code(response)
    if response.status == 410 or code in PERMANENT_EXTEND_FAILURES:
        hold.extendable = False
    if hold.settled:
        return False  # committed while the extension was on its way: nothing to keep
    log.warning(
        "Cycles extension of %s failed (HTTP %s %s)%s",
        hold.reservation_id,
        response.status,
        code,
        "" if hold.extendable else "; the stream ends before its hold lapses",
    )
    return False
