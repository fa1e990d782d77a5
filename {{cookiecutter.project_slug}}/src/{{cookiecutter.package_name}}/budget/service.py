"""The app's budget machinery, kept on the app (``budget_service(app)``).

What the guard shares across requests lives here, beside the Cycles clients it uses
(cycles/clients.py): the settler of charges Cycles has not taken yet, the heartbeat that
keeps live streams' holds from lapsing, the deny cache, the runner that bounds provider
calls, and the releaser of holds whose reserve answer was lost. Each app has its own, so
two apps in one process never share a thread, a cache or a store.

It starts nothing until Cycles is first used (the settler starts with the first Cycles
client) and closes with the Cycles clients (``cycles.clients.close(app)``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from flask import Flask, current_app

from ..config import CYCLES_SAFETY_MARGIN_MS, Settings, cycles_call_budget_ms
from ..cycles import runcycles_compat
from ..cycles.clients import CyclesClients, client_created, closing, cycles_clients
from . import signals
from .deny_cache import DenyCache
from .hold_keeper import EXTEND_CONCURRENCY, HoldKeeper, extend_hold
from .holds import Hold
from .lost_reserves import LostReserves, release_lost
from .provider_deadlines import CallRunner
from .settler import Settler
from .unsettled import Charge, UnsettledStore

log = logging.getLogger(__name__)

EXTENSION = "budget"


class BudgetService:
    """The guard's shared machinery for one app; ``sender`` is what its signals carry."""

    def __init__(self, settings: Settings, cycles: CyclesClients, *, sender: object) -> None:
        self.settings = settings
        self.cycles = cycles
        self.sender = sender
        # Charges Cycles has not taken yet (kept on disk, shared by the host's workers) and
        # the thread that retries them until they land; started with the first client.
        self.settler = Settler(
            UnsettledStore(settings.cycles_journal_dir),
            cycles.client_for,
            fail_open=settings.cycles_fail_open,
            on_start=self._import_runcycles_journal,
            report=self._report_settled_later,
        )
        # Completions run here, so a request stops waiting when its hold cannot wait.
        self.provider_calls = CallRunner()
        # Recent denials per app tenant: a tenant out of budget is answered from here.
        self.deny_cache = DenyCache(settings.cycles_deny_cache_ms)
        self.keeper = self.new_keeper()
        # Holds Cycles may keep although their reserve answer was lost: released here.
        self.lost_reserves = LostReserves(lambda lost: release_lost(cycles.client_for, lost))
        # Bound methods, held weakly by blinker: they live as long as this service.
        client_created.connect(self._on_client_created, sender=cycles)
        closing.connect(self._on_cycles_closing, sender=cycles)

    def new_keeper(
        self, clock: Callable[[], float] = time.monotonic, *, background: bool = True
    ) -> HoldKeeper:
        """The heartbeat of this app's streams (tests pass a clock they move by hand).

        Streams outlive a TTL: it extends every live stream's hold, early enough that the
        stream can still wait the longest provider pause and commit. A stream stuck on a
        write to its client is ended after STREAM_WRITE_TIMEOUT, and at the latest while
        its hold still has time for one commit.
        """
        return HoldKeeper(
            self.extend,
            ttl_ms=self.settings.cycles_reservation_ttl_ms,
            lead_s=self.stream_cutoff_s() + self.call_budget_s(),
            settle_lead_s=self.call_budget_s() + CYCLES_SAFETY_MARGIN_MS / 1000,
            write_timeout_s=self.settings.stream_write_timeout,
            clock=clock,
            background=background,
            concurrency=EXTEND_CONCURRENCY,
        )

    def extend(self, hold: Hold) -> bool:
        """Push ``hold``'s expiry out by one TTL; True when Cycles took the extension."""
        ttl_ms = self.settings.cycles_reservation_ttl_ms
        return extend_hold(self.cycles.client_for, hold, ttl_ms)

    def call_budget_s(self) -> float:
        """The longest one Cycles call can take (see config.minimum_reservation_ttl_ms)."""
        settings = self.settings
        return (
            cycles_call_budget_ms(settings.cycles_connect_timeout, settings.cycles_read_timeout)
            / 1000
        )

    def stream_cutoff_s(self) -> float:
        """A stream waits on the provider only while its hold has this much time left:
        the longest provider pause, then a commit, with runcycles' margin to spare."""
        return self.settings.llm_timeout + self.call_budget_s() + CYCLES_SAFETY_MARGIN_MS / 1000

    def close(self) -> None:
        """Stop the threads; what is still unsettled stays on disk for the next start (or
        another worker)."""
        self.keeper.close()
        self.lost_reserves.close()
        self.settler.close()

    # --- hooks -----------------------------------------------------------------------------

    def _on_client_created(self, sender: object) -> None:
        # What an earlier run (or a worker that died) left unsettled starts landing now.
        self.settler.start()

    def _on_cycles_closing(self, sender: object) -> None:
        self.close()  # before the clients go: the threads may be using them

    def _report_settled_later(self, tenant: str, outcome: str, uncharged: int) -> None:
        signals.settled_later.send(self.sender, tenant=tenant, outcome=outcome, uncharged=uncharged)

    def _import_runcycles_journal(self) -> None:
        """Earlier versions of this app left what Cycles did not take in runcycles' journal
        (in the same folder): move it to the settler's store, so an upgrade loses nothing."""
        tenants = {_canonical(self.cycles.subject_body(t)): t for t in self.settings.tenants}
        for entry in runcycles_compat.journaled_settlements(self.settings.cycles_journal_dir):
            event = entry.event_body or {}
            tenant = tenants.get(_canonical(event.get("subject")))
            actual = event.get("actual")
            amount = actual.get("amount") if isinstance(actual, dict) else None
            key = event.get("idempotency_key")
            if tenant is None or not isinstance(amount, int) or not isinstance(key, str):
                log.error("Cannot tell whose spend %s is; left for an operator", entry.path)
                continue
            commit = entry.commit_body
            charge = Charge(
                key=str(commit.get("idempotency_key", key)) if commit else key,
                tenant=tenant,
                amount=amount,
                reservation_id=entry.reservation_id if commit else None,
                covered_until_ms=0,  # unknown: counted against new reservations until it lands
                stage="commit" if commit else "event",
                commit_body=commit,
                event_body=event,
                attempts=0,
            )
            self.settler.store.add(charge, first_attempt_ms=0)
            entry.path.unlink(missing_ok=True)
            log.warning("Moved %s of tenant %s from runcycles' journal", entry.path.name, tenant)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def init_app(app: Flask) -> None:
    """Give ``app`` its budget machinery, on its Cycles clients (after cycles.clients)."""
    clients = cycles_clients(app)
    app.extensions[EXTENSION] = BudgetService(clients.settings, clients, sender=app)


def budget_service(app: Flask | None = None) -> BudgetService:
    """The app's budget machinery (``app`` defaults to the current app)."""
    service: BudgetService = (app if app is not None else current_app).extensions[EXTENSION]
    return service
