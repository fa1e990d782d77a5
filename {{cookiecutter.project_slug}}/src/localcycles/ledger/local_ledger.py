"""The ledger: every protocol operation as one SQLite transaction over the shared file.

``LocalLedger`` is assembled from one part per kind of operation, each in its own module:

* ``keys.KeyStore``: tenants, API keys, authentication;
* ``budget_admin.BudgetAdmin``: creating, updating, funding and reading budgets;
* ``lifecycle.ReservationLifecycle``: reserve, decide, commit, release, extend, events;
* ``reads.LedgerReads``: reservation and balance queries;

and ``retention`` keeps the file bounded. The HTTP layer authenticates and validates;
everything here is a function of the database (and the injectable clock), so several
server threads or processes can share one file.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .budget_admin import BudgetAdmin
from .db import Database
from .keys import KeyStore
from .lifecycle import ReservationLifecycle
from .reads import LedgerReads
from .retention import DAY_MS, DEFAULT_REPLAY_WINDOW_DAYS, prune

Clock = Callable[[], int]

MAX_EXTENSIONS = 10
#: A reservation's TTL is capped here, silently (the reference's default
#: ``max_reservation_ttl_ms``); requests may ask up to the spec's 86,400,000.
MAX_RESERVATION_TTL_MS = 3_600_000
#: How often (ledger clock) the background maintenance prunes.
PRUNE_INTERVAL_MS = 60_000
MAX_REPLAY_WINDOW_DAYS = 3650


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalLedger(KeyStore, BudgetAdmin, ReservationLifecycle, LedgerReads):
    """A Cycles ledger in one SQLite file (WAL). Safe across threads and processes.

    ``replay_window_days``: how long idempotency records and finished reservations are kept
    (a retry within the window replays; older ones are pruned).
    """

    def __init__(
        self,
        db_path: str,
        *,
        clock: Clock | None = None,
        max_extensions: int = MAX_EXTENSIONS,
        max_reservation_ttl_ms: int = MAX_RESERVATION_TTL_MS,
        replay_window_days: float = DEFAULT_REPLAY_WINDOW_DAYS,
    ) -> None:
        KeyStore.__init__(self)
        self.replay_window_days = replay_window_days  # validated before the file is opened
        self.db = Database(db_path)
        self.path = self.db.path
        self.clock: Clock = clock or wall_clock_ms
        self.max_extensions = max_extensions
        self.max_reservation_ttl_ms = max_reservation_ttl_ms
        self._next_prune_ms = 0
        # The server's background checkpoint thread runs this between checkpoints.
        self.db.maintenance = self.prune_if_due

    @property
    def replay_window_days(self) -> float:
        return self._replay_window_ms / DAY_MS

    @replay_window_days.setter
    def replay_window_days(self, days: float) -> None:
        if not 0 < days <= MAX_REPLAY_WINDOW_DAYS:  # also refuses NaN
            raise ValueError(f"replay window must be in (0, {MAX_REPLAY_WINDOW_DAYS}] days")
        self._replay_window_ms = int(days * DAY_MS)

    def prune(self) -> int:
        """Forget idempotency records and finished reservations older than the window."""
        return prune(self.db, self.clock(), self._replay_window_ms)

    def prune_if_due(self) -> int:
        now = self.clock()
        if now < self._next_prune_ms:
            return 0
        self._next_prune_ms = now + PRUNE_INTERVAL_MS
        return self.prune()

    def close(self) -> None:
        self.db.close()
