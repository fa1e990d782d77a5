"""An embedded, Cycles-protocol-compatible budget server for development and tests.

Standard library only: a SQLite ledger (WAL, one ``BEGIN IMMEDIATE`` transaction per
mutation, safe across threads and processes) behind an HTTP/1.1 server that speaks the
Cycles v0 wire protocol and the provisioning subset of the reference admin API::

    server = LocalCyclesServer("instance/cycles.sqlite3", admin_key="dev-admin").start()
    server.ledger.create_tenant("acme")
    key = server.ledger.create_api_key("acme")  # runtime permissions: no budget writes
    server.ledger.set_budget("tenant:acme", allocated=100_000_000)
    ...  # point runcycles.CyclesConfig(base_url=server.base_url, api_key=key) at it
    server.stop()

Or as its own process: ``python -m localcycles --db PATH [--port N] [--admin-key K]``.
Where things live: ``protocol`` (validation, scopes, permissions, errors: no I/O),
``ledger`` (the SQLite ledger: keys, budgets, the reservation lifecycle, reads, retention),
``events`` (webhook subscriptions, budget threshold events, signed delivery with retries)
and ``http`` (codec, connection front end, routes, server); each uses only those before it.
``process`` runs the server as its own process.
"""

from .http.server import LocalCyclesServer
from .ledger.local_ledger import LocalLedger
from .process import main, spawn_server_process
from .protocol.errors import LedgerError
from .protocol.permissions import RUNTIME_PERMISSIONS

__all__ = [
    "RUNTIME_PERMISSIONS",
    "LedgerError",
    "LocalCyclesServer",
    "LocalLedger",
    "main",
    "spawn_server_process",
]
