"""Fixtures for app tests whose Cycles server runs on a clock the test moves.

"The hold expired while the provider ran" then happens by a jump of that clock, not by a
wait. A plugin that ``tests/conftest.py`` loads (``pytest_plugins``); a test module that
needs another kind of clock overrides ``server_clock``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import TENANTS, Provisioner
from localcycles import LocalCyclesServer


class ServerClock:
    """Epoch milliseconds for the Cycles server, moved by the test."""

    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def server_clock() -> ServerClock:
    return ServerClock()


@pytest.fixture
def clocked_server(tmp_path: Path, server_clock: Callable[[], int]) -> Iterator[LocalCyclesServer]:
    server = LocalCyclesServer(str(tmp_path / "clocked.sqlite3"), clock=server_clock).start()
    yield server
    server.stop()
    server.ledger.close()


@pytest.fixture
def clocked(clocked_server: LocalCyclesServer) -> Provisioner:
    """The clocked server's ledger, with every test tenant provisioned."""
    provisioner = Provisioner(clocked_server.ledger)
    for tenant in TENANTS:
        provisioner.tenant(tenant)
    return provisioner
