"""The app's link to Cycles: where the server is, a client per API key, and the machinery
the guard shares (deny cache, heartbeat, the settler of unsettled charges, bounded provider
calls).

Everything lives on the app (``state.cycles(app)``), never on the module, so two apps in one
process each talk to their own Cycles server with their own keys. Where an app tenant's
budget lives in Cycles (tenant, scope, subject, key) is cycles_tenancy.py's answer.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flask import Flask
from runcycles import CyclesClient, CyclesConfig, Subject

from .. import state
from ..budget import reservations
from ..budget.deny_cache import DenyCache
from ..budget.hold_keeper import HoldKeeper
from ..budget.lost_reserves import LostReserves
from ..budget.provider_deadlines import CallRunner
from ..budget.settler import Settler
from ..budget.unsettled import Charge, UnsettledStore
from ..config import (
    CYCLES_SAFETY_MARGIN_MS,
    Settings,
    cycles_call_budget_ms,
)
from . import embedded_ledger, runcycles_compat
from . import errors as cycles_errors
from . import tenancy as cycles_tenancy
from .embedded_ledger import EmbeddedCycles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balance:
    """One budget scope as the caller sees it, in USD microcents."""

    scope: str
    allocated: int
    spent: int
    reserved: int
    remaining: int
    debt: int


@dataclass(frozen=True)
class CyclesConnection:
    """A Cycles server and the API key each app tenant uses on it."""

    base_url: str
    api_keys: Mapping[str, str]
    ledger: EmbeddedCycles | None = None  # the embedded ledger, when it is the server


class CyclesClients:
    """The app's Cycles clients (one per API key) and what the guard shares."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], CyclesConnection],
        *,
        embedded: bool,
    ) -> None:
        """``connect()`` says where Cycles is; it runs on first use (see :meth:`connection`)."""
        self.settings = settings
        self.fail_open = settings.cycles_fail_open
        self._connect = connect
        self._connection: CyclesConnection | None = None
        self._connect_lock = threading.Lock()
        # One client per distinct key, made on first use (each costs a TLS context): a
        # CyclesClient is thread-safe, and a Cycles key belongs to one Cycles tenant.
        self._clients: dict[str, CyclesClient] = {}
        # metrics.init_app swaps in a client that times each call.
        self.client_factory: Callable[[CyclesConfig], CyclesClient] = CyclesClient
        self._lock = threading.Lock()
        # Charges Cycles has not taken yet (kept on disk, shared by the host's workers) and
        # the thread that retries them until they land; started with the first client.
        self.settler = Settler(
            UnsettledStore(settings.cycles_journal_dir),
            self.client_for,
            fail_open=settings.cycles_fail_open,
            on_start=self._import_runcycles_journal,
        )
        # Completions run here, so a request stops waiting when its hold cannot wait.
        self.provider_calls = CallRunner()
        # Recent denials per app tenant: a tenant out of budget is answered from here.
        self.deny_cache = DenyCache(settings.cycles_deny_cache_ms)
        self.keeper = self.new_keeper()
        # Holds Cycles may keep although their reserve answer was lost: released here.
        self.lost_reserves = LostReserves(
            lambda lost: reservations.recover_lost_reserve(self, lost)
        )

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
            lambda hold: reservations.extend(self, hold),
            ttl_ms=self.settings.cycles_reservation_ttl_ms,
            lead_s=self.stream_cutoff_s() + self.call_budget_s(),
            settle_lead_s=self.call_budget_s() + CYCLES_SAFETY_MARGIN_MS / 1000,
            write_timeout_s=self.settings.stream_write_timeout,
            clock=clock,
            background=background,
        )

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

    def connection(self) -> CyclesConnection:
        """Where Cycles is and the key of each tenant; the embedded ledger starts here.

        Lazily, so commands that never talk to Cycles (``flask --help``, ``flask routes``)
        start no ledger; the first request or ``flask cycles`` command does.
        """
        with self._connect_lock:
            if self._connection is None:
                self._connection = self._connect()
            return self._connection

    def client_for(self, tenant: str) -> CyclesClient:
        connection = self.connection()
        key = connection.api_keys[tenant]
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                config = CyclesConfig(
                    base_url=connection.base_url,
                    api_key=key,
                    connect_timeout=self.settings.cycles_connect_timeout,
                    read_timeout=self.settings.cycles_read_timeout,
                    # The guard settles through its own store (settler.py), never through
                    # runcycles' journal: nothing of runcycles' may wait at process exit.
                    retry_enabled=False,
                    journal_enabled=False,
                    retry_flush_timeout=0.0,
                )
                client = self._clients[key] = self.client_factory(config)
                runcycles_compat.install_transport(client, config)
        # What an earlier run (or a worker that died) left unsettled starts landing now.
        self.settler.start()
        return client

    def _import_runcycles_journal(self) -> None:
        """Earlier versions of this app left what Cycles did not take in runcycles' journal
        (in the same folder): move it to the settler's store, so an upgrade loses nothing."""
        tenants = {_canonical(self.subject_body(t)): t for t in self.settings.tenants}
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

    def close(self) -> None:
        self.keeper.close()
        self.lost_reserves.close()
        # What is still unsettled stays on disk for the next start (or another worker).
        self.settler.close()
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        with self._connect_lock:
            connection, self._connection = self._connection, None
        if connection is not None and connection.ledger is not None:
            connection.ledger.stop()

    def subject_for(self, tenant: str) -> Subject:
        """The Cycles subject of ``tenant``'s calls (cycles_tenancy.py decides it)."""
        return Subject.model_validate(self.subject_body(tenant))

    def subject_body(self, tenant: str) -> dict[str, str]:
        """``subject_for`` as the JSON Cycles receives (plain dict: no model round trip)."""
        return cycles_tenancy.subject(self.settings, tenant)

    def balances(self, tenant: str) -> list[Balance]:
        """``tenant``'s own budgets, one per scope."""
        filters = cycles_tenancy.balance_filters(self.settings, tenant)
        response = self.client_for(tenant).get_balances(**filters)
        if not response.is_success:
            raise cycles_errors.from_response(response, "balances")
        # Read leniently: a newer server may add fields the client's strict models reject.
        body = response.body if isinstance(response.body, dict) else {}
        rows = body.get("balances")
        return [
            Balance(
                scope=str(row.get("scope_path") or row.get("scope")),
                allocated=_amount(row, "allocated"),
                spent=_amount(row, "spent"),
                reserved=_amount(row, "reserved"),
                remaining=_amount(row, "remaining"),
                debt=_amount(row, "debt"),
            )
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict)
        ]


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _amount(row: Mapping[str, object], name: str) -> int:
    value = row.get(name)
    amount = value.get("amount") if isinstance(value, dict) else None
    return amount if isinstance(amount, int) else 0


def init_app(app: Flask) -> None:
    """Connect ``app`` to Cycles: its server, or the embedded ledger (started on first use)."""
    settings = state.settings(app)
    if settings.uses_local_cycles:

        def connect() -> CyclesConnection:
            embedded = embedded_ledger.start(settings)
            keys = {tenant: embedded.api_key_for(tenant) for tenant in settings.tenants}
            return CyclesConnection(embedded.base_url, keys, embedded)

        if settings.app_env != "testing":
            atexit.register(close, app)
    else:
        server = CyclesConnection(settings.cycles_base_url, cycles_tenancy.runtime_keys(settings))

        def connect() -> CyclesConnection:
            return server

    app.extensions[state.CYCLES] = CyclesClients(
        settings, connect, embedded=settings.uses_local_cycles
    )
    cycles_errors.init_app(app)


def local_server(app: Flask) -> EmbeddedCycles | None:
    """The app's embedded ledger (started now if it was not yet), or None with a server."""
    return state.cycles(app).connection().ledger


def close(app: Flask) -> None:
    """Close the app's Cycles clients and stop its embedded ledger (idempotent)."""
    clients = app.extensions.pop(state.CYCLES, None)
    if clients is not None:
        clients.close()
