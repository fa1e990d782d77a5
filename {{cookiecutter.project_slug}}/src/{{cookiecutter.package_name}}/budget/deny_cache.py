"""Remembers budget denials for a moment, so a tenant out of budget cannot flood Cycles.

When Cycles answers the preflight ``decide`` with DENY, the answer is kept per app tenant
for its retry window: the ``retry_after_ms`` Cycles sent, never longer than
``CYCLES_DENY_CACHE_MS`` (default 1 s). Within the window a request asking no less than the
denied one gets the same 402 without a Cycles call; ``retry_after_ms`` counts down. A
tenant out of budget therefore costs about one ``decide`` per window per worker, and a
top-up is seen at most one window later. Only denials are kept, never an allowance.

When a window ends, the first request to notice asks Cycles again while the others keep
getting the cached answer until it is back (so a burst never becomes a stampede).

The cache lives on the app (``CyclesBudgets.deny_cache``), is shared by the worker's
threads behind one lock, and holds at most ``max_entries`` tenants.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ApiError

DEFAULT_MAX_ENTRIES = 10_000


@dataclass
class _Denial:
    estimate: int  # the smallest estimate denied: asking as much or more is denied again
    error: ApiError
    retry_at: float  # when the client may usefully retry (monotonic seconds)
    expires: float  # when the cached answer goes stale and Cycles is asked again


class DenyCache:
    """Budget denials per app tenant, each kept for at most ``window_ms``."""

    def __init__(
        self,
        window_ms: int,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Denial] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tenant: str, estimate: int) -> ApiError | None:
        """The cached denial for ``tenant`` asking ``estimate``, or None: ask Cycles.

        A None for an expired denial makes the caller the one who asks; it must then call
        :meth:`remember` (denied again) or :meth:`forget` (anything else).
        """
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(tenant)
            if entry is None or estimate < entry.estimate:
                return None
            now = self._clock()
            if now >= entry.expires:
                # This caller refreshes; the others keep the answer for one more window.
                entry.expires = now + self.window_ms / 1000
                return None
            remaining = max(entry.retry_at, entry.expires) - now
            error = entry.error
        return error.with_retry_after(_ms(remaining))  # its details (estimate, ...) kept

    def remember(self, tenant: str, estimate: int, error: ApiError) -> ApiError:
        """Keep Cycles' denial of ``estimate`` for ``tenant``; return the answer to send.

        ``error.retry_after_ms`` is what Cycles advised (or None); the cache keeps the denial
        for that long, at most ``window_ms``, and the answer then carries at least the time
        until Cycles will be asked again.
        """
        if not self.enabled or error.retry_after_ms == 0:
            self.forget(tenant)
            return error
        window_ms = min(error.retry_after_ms or self.window_ms, self.window_ms)
        retry_after_ms = max(error.retry_after_ms or 0, window_ms)
        now = self._clock()
        entry = _Denial(
            estimate,
            error,
            retry_at=now + retry_after_ms / 1000,
            expires=now + window_ms / 1000,
        )
        with self._lock:
            self._entries.pop(tenant, None)  # re-inserted last: the dict stays oldest-first
            if len(self._entries) >= self.max_entries:
                self._prune(now)
            self._entries[tenant] = entry
        return error.with_retry_after(retry_after_ms)

    def add_details(self, tenant: str, error: ApiError) -> None:
        """Give ``tenant``'s cached denial the body fields of ``error`` (what remains, read
        after the denial was remembered, so the other threads never waited for it)."""
        if self.enabled:
            with self._lock:
                entry = self._entries.get(tenant)
                if entry is not None:
                    entry.error = entry.error.with_details(**error.details)

    def forget(self, tenant: str) -> None:
        """Drop ``tenant``'s denial: Cycles answered something else."""
        if self.enabled:
            with self._lock:
                self._entries.pop(tenant, None)

    def _prune(self, now: float) -> None:
        """Make room: drop stale entries, then the oldest until below the cap."""
        for tenant in [t for t, e in self._entries.items() if now >= e.expires]:
            del self._entries[tenant]
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded up and at least 1 (a cached answer is never "retry now")."""
    return max(1, math.ceil(seconds * 1000))
