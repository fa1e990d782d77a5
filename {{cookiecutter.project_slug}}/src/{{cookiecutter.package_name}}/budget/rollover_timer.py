"""Development: the app keeps the embedded ledger's planned budgets rolled over by itself.

With ``CYCLES_BASE_URL=local`` and ``CYCLES_LOCAL_ROLLOVER`` on (the default under
``APP_ENV=development``; off in tests unless a test turns it on, and a real Cycles stack
runs ``flask cycles rollover`` on a schedule instead, see compose.yaml), a thread starts
with the embedded ledger: it rolls over at once (catching up after downtime), then once a
minute. A run with nothing to do makes no call (``rollover.py``). The time is the app's
wall clock (``cycles/key_expiry.now``), which tests set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

from ..config import app_settings
from ..cycles import key_expiry
from ..cycles.admin_api import Endpoint
from ..cycles.clients import CyclesClients, client_created, closing, cycles_clients
from ..cycles.embedded_ledger import EmbeddedCycles
from .plans import planned_budgets
from .rollover import roll_over
from .rollover_state import RolloverState

log = logging.getLogger(__name__)

EXTENSION = "budget_rollover"
INTERVAL_S = 60.0
# The rollover record's name for the embedded ledger (a real admin server is its URL).
LOCAL_SERVER = "local"


class RolloverTimer:
    """Runs ``run`` now and then every ``interval_s`` on a daemon thread, until closed."""

    def __init__(self, run: Callable[[], None], interval_s: float = INTERVAL_S) -> None:
        self._run = run
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self.runs = 0  # finished runs, failed or not (tests wait on it)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._loop, name="budget-rollover", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Run again now rather than at the end of the interval."""
        self._wake.set()

    def wait_for_runs(self, count: int, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self.runs >= count, timeout_s)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._closed:
            try:
                self._run()
            except Exception as exc:  # a failed run is retried at the next interval
                log.warning("Budget rollover failed (retried in %gs): %s", self._interval_s, exc)
            with self._lock:
                self.runs += 1
                self._lock.notify_all()
            self._wake.wait(self._interval_s)
            self._wake.clear()


class EmbeddedRollover:
    """The timer of one app, and the rollover run it repeats on the embedded ledger."""

    def __init__(self, app: Flask, clients: CyclesClients) -> None:
        self.app = app
        self.settings = app_settings(app)
        self.timer = RolloverTimer(self.run)
        self._embedded: EmbeddedCycles | None = None
        # Bound methods, held weakly by blinker: they live as long as this object (the app's).
        client_created.connect(self._on_client_created, sender=clients)
        closing.connect(self._on_closing, sender=clients)

    def run(self) -> None:
        embedded = self._embedded
        if embedded is None:
            return
        admin = Endpoint(embedded.base_url, {"X-Admin-API-Key": str(embedded.admin_key)})
        state = RolloverState(self.settings.budget_rollover_state, LOCAL_SERVER)
        now = key_expiry.now(self.app)
        for done in roll_over(admin, planned_budgets(self.settings), state, now):
            if done.outcome == "reset":
                log.info("Budget rollover: %s", done.describe())
            elif done.outcome == "failed":
                log.warning("Budget rollover: %s", done.describe())

    def _on_client_created(self, sender: CyclesClients) -> None:
        # The ledger runs once a client exists; kept, so that a run during shutdown never
        # starts it again.
        if self._embedded is None:
            self._embedded = sender.connection().ledger
        if self._embedded is not None:
            self.timer.start()

    def _on_closing(self, sender: CyclesClients) -> None:
        self.timer.close()


def init_app(app: Flask) -> None:
    """Start the timer with the embedded ledger when the settings ask for it."""
    settings = app_settings(app)
    if settings.uses_local_cycles and settings.cycles_local_rollover:
        app.extensions[EXTENSION] = EmbeddedRollover(app, cycles_clients(app))


def rollover_timer(app: Flask) -> RolloverTimer | None:
    """The app's development rollover timer, if it has one."""
    found: EmbeddedRollover | None = app.extensions.get(EXTENSION)
    return found.timer if found is not None else None
