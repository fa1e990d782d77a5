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
Where things live: ``ledger`` assembles the ledger from ``keys`` (tenants, API keys,
authentication), ``budget_admin`` (budgets and funding), ``lifecycle`` (reserve, commit,
release, extend, decide, events) and ``reads`` (queries), over the SQL helpers in ``rows``
and ``db``; ``retention`` prunes what is past the replay window. ``routes`` is the HTTP
surface (auth, ``permissions``, and validation by ``validation`` / ``admin_requests``);
``server`` and ``http_*`` are the transport.
"""

from .errors import LedgerError
from .ledger import LocalLedger
from .permissions import RUNTIME_PERMISSIONS
from .process import main, spawn_server_process
from .server import LocalCyclesServer

__all__ = [
    "RUNTIME_PERMISSIONS",
    "LedgerError",
    "LocalCyclesServer",
    "LocalLedger",
    "main",
    "spawn_server_process",
]
