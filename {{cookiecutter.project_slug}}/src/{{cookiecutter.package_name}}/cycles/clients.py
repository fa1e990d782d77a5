"""The app's link to Cycles: where the server is, and a runcycles client per API key.

Everything lives on the app (``cycles_clients(app)``), never on the module, so two apps in
one process each talk to their own Cycles server with their own keys. Where an app tenant's
budget lives in Cycles (tenant, scope, subject, key) is tenancy.py's answer; what the guard
builds on these clients (settler, heartbeat, deny cache) is budget/service.py's.

Two signals (sender: the :class:`CyclesClients`) let the budget machinery follow the
clients without this package knowing it: ``client_created`` on every client handed out
(the first one starts the settler) and ``closing`` before the clients close.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from blinker import Namespace
from flask import Flask, current_app
from runcycles import CyclesClient, CyclesConfig, Subject

from ..config import Settings, app_settings
from . import embedded_ledger, errors, runcycles_compat, tenancy
from .embedded_ledger import EmbeddedCycles

EXTENSION = "cycles"

_signals = Namespace()
client_created = _signals.signal("cycles-client-created")
closing = _signals.signal("cycles-closing")


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
    """The app's Cycles clients: one per API key, on the server :meth:`connection` names."""

    def __init__(
        self,
        settings: Settings,
        connect: Callable[[], CyclesConnection],
        client_factory: Callable[[CyclesConfig], CyclesClient] = CyclesClient,
    ) -> None:
        """``connect()`` says where Cycles is; it runs on first use (see :meth:`connection`).
        ``client_factory`` makes each runcycles client (the app's times every call)."""
        self.settings = settings
        self._connect = connect
        self._connection: CyclesConnection | None = None
        self._connect_lock = threading.Lock()
        # One client per distinct key, made on first use (each costs a TLS context): a
        # CyclesClient is thread-safe, and a Cycles key belongs to one Cycles tenant.
        self._clients: dict[str, CyclesClient] = {}
        self._client_factory = client_factory
        self._lock = threading.Lock()

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
                    # The guard settles through its own store (budget/settler.py), never
                    # through runcycles' journal: nothing of runcycles' may wait at exit.
                    retry_enabled=False,
                    journal_enabled=False,
                    retry_flush_timeout=0.0,
                )
                client = self._clients[key] = self._client_factory(config)
                runcycles_compat.install_transport(client, config)
        # Every call says so, as it always started the settler: cheap once started.
        client_created.send(self)
        return client

    def close(self) -> None:
        """Close every client and stop the embedded ledger; listeners stop first."""
        closing.send(self)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        with self._connect_lock:
            connection, self._connection = self._connection, None
        if connection is not None and connection.ledger is not None:
            connection.ledger.stop()

    def subject_for(self, tenant: str) -> Subject:
        """The Cycles subject of ``tenant``'s calls (tenancy.py decides it)."""
        return Subject.model_validate(self.subject_body(tenant))

    def subject_body(self, tenant: str) -> dict[str, str]:
        """``subject_for`` as the JSON Cycles receives (plain dict: no model round trip)."""
        return tenancy.subject(self.settings, tenant)

    def balances(self, tenant: str, **narrower: str) -> list[Balance]:
        """``tenant``'s own budgets, one per scope; ``narrower``: more subject filters
        (``agent="bob"``: only scopes with that segment)."""
        filters = {**tenancy.balance_filters(self.settings, tenant), **narrower}
        response = self.client_for(tenant).get_balances(**filters)
        if not response.is_success:
            raise errors.from_response(response, "balances")
        rows = _balances(response.body)
        if rows is None:
            # A 200 that is not a balance list (not JSON, another shape) is no answer: never
            # an empty list, never "ready".
            error = errors.malformed()
            errors.log_failure("balances", response.status, None, error)
            raise error
        return rows


def _balances(body: object) -> list[Balance] | None:
    """The rows of a balances answer, or None when it is not one. Unknown fields are
    ignored (a newer server may add some the client's strict models reject); what the
    protocol requires (``balances``, each row's scope and ``remaining``) must be there, and
    every amount present must be a whole number."""
    rows = body.get("balances") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        return None
    found = []
    for row in rows:
        if not isinstance(row, dict) or "remaining" not in row:
            return None
        scope = row.get("scope_path") or row.get("scope")
        allocated, spent, reserved, remaining, debt = (
            _amount(row, name) for name in ("allocated", "spent", "reserved", "remaining", "debt")
        )
        if not isinstance(scope, str) or None in (allocated, spent, reserved, remaining, debt):
            return None
        found.append(
            Balance(scope, allocated or 0, spent or 0, reserved or 0, remaining or 0, debt or 0)
        )
    return found


def _amount(row: Mapping[str, object], name: str) -> int | None:
    """``row[name]["amount"]``; 0 when the field is absent, None when it is malformed."""
    if name not in row:
        return 0
    value = row[name]
    amount = value.get("amount") if isinstance(value, dict) else None
    if isinstance(amount, int) and not isinstance(amount, bool):
        return amount
    return None


def init_app(
    app: Flask, client_factory: Callable[[CyclesConfig], CyclesClient] = CyclesClient
) -> None:
    """Connect ``app`` to Cycles: its server, or the embedded ledger (started on first use)."""
    settings = app_settings(app)
    if settings.uses_local_cycles:

        def connect() -> CyclesConnection:
            embedded = embedded_ledger.start(settings)
            keys = {tenant: embedded.api_key_for(tenant) for tenant in settings.tenants}
            return CyclesConnection(embedded.base_url, keys, embedded)

        if settings.app_env != "testing":
            atexit.register(close, app)
    else:
        server = CyclesConnection(settings.cycles_base_url, tenancy.runtime_keys(settings))

        def connect() -> CyclesConnection:
            return server

    app.extensions[EXTENSION] = CyclesClients(settings, connect, client_factory)
    errors.init_app(app)


def cycles_clients(app: Flask | None = None) -> CyclesClients:
    """The app's Cycles clients (``app`` defaults to the current app)."""
    clients: CyclesClients = (app if app is not None else current_app).extensions[EXTENSION]
    return clients


def local_server(app: Flask) -> EmbeddedCycles | None:
    """The app's embedded ledger (started now if it was not yet), or None with a server."""
    return cycles_clients(app).connection().ledger


def close(app: Flask) -> None:
    """Close the app's Cycles clients (and what runs on them) and stop its embedded ledger
    (idempotent)."""
    clients = app.extensions.pop(EXTENSION, None)
    if clients is not None:
        clients.close()
