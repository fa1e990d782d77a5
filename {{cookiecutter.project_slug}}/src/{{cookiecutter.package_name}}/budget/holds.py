"""What the guard keeps for one request: its :class:`Hold`, the :class:`Usage` it is billed
on, and the :class:`Settlement` that ended it.

Plain values: the request they serve is named by its id (``request_id``), passed in by the
guard, so nothing here (or in the budget code that uses them) reads a request context.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..cycles.clients import Balance

HoldMode = Literal["enforce", "shadow", "unguarded"]
Outcome = Literal["committed", "late", "pending", "event", "released"]


@dataclass(eq=False)
class Hold:
    """The budget held for one request while its provider call runs."""

    tenant: str
    route: str
    estimate: int
    mode: HoldMode
    reservation_id: str | None = None  # None: nothing is held (shadow, unguarded)
    max_tokens_cap: int | None = None  # Cycles ALLOW_WITH_CAPS: the most output allowed
    # When the hold lapses, on this process' monotonic clock (measured from before the
    # reserve call was sent, so never later than the server's own expiry).
    expires_at: float = math.inf
    extensions: int = 0
    extendable: bool = True  # False once Cycles refused an extension for good
    settled: bool = False
    # The idempotency key of this hold's charge: its commit, its spend event if the hold
    # lapsed, and its stream record (unsettled.py), so a charge never lands twice.
    charge_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    streaming_on_disk: bool = False  # a stream record says what this stream owes so far
    # The app request this hold serves (X-Request-ID): sent to Cycles in every record's
    # metadata, so a charge in the ledger can be traced to the request and its log line.
    request_id: str | None = None
    # The caller's own budget as the reserve answer showed it (this hold already taken
    # out): what the response headers report, with no extra Cycles call. None when the
    # answer carried no row for it (shadow, unguarded, an older server).
    balance: Balance | None = None
    # The model the call runs (LLM_MODELS); "" for LLM_MODEL. Its Cycles subject and
    # action name it, so a per-model budget holds it (reservations.py).
    model: str = ""
    # The tenant's end user the call is for (its budget's ``agent`` level); "" for none.
    user: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def held(self) -> bool:
        return self.reservation_id is not None

    def remaining_after(self, charged: int | None) -> int | None:
        """The caller's remaining budget in USD microcents as the reserve answer showed it,
        with this hold's own ``charged`` applied (None: still running, its hold taken out).
        None when the answer named no budget of the caller's. Other requests settling
        meanwhile are not seen: a figure without another Cycles call."""
        if self.balance is None:
            return None
        if charged is None:
            return self.balance.remaining
        held = self.estimate if self.held else 0  # a dry run (shadow) holds nothing
        return self.balance.remaining + held - charged

    def claim_settlement(self) -> bool:
        """True exactly once: the caller that gets it commits or releases the hold."""
        with self._lock:
            if self.settled:
                return False
            self.settled = True
            return True

    def request_metadata(self) -> dict[str, str]:
        """Ties a Cycles record to the app request that caused it."""
        return {} if self.request_id is None else {"request_id": self.request_id}


@dataclass(frozen=True)
class Settlement:
    outcome: Outcome
    charged: int  # USD microcents the ledger took (or will take, once a retry lands)


@dataclass(frozen=True)
class Usage:
    """What a finished (or cut-short) call is billed on."""

    input_tokens: int
    output_tokens: int
    model: str
    latency_ms: int
    # The parts of input_tokens read from / written to the provider's prompt cache.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
