"""Fixtures for tests that talk to the embedded Cycles server over real HTTP (``lc_*``).

A plugin that ``tests/conftest.py`` loads (``pytest_plugins``), not a conftest of
tests/localcycles/: that folder cannot be a package (it would shadow ``localcycles``), and a
second non-package ``conftest`` module would replace the one other tests import from.
Constants and request-body helpers live in ``support.localcycles_kit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runcycles import CyclesClient, CyclesConfig

from localcycles import LocalCyclesServer, LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, FakeClock


@pytest.fixture
def lc_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lc_server(tmp_path: Path, lc_clock: FakeClock) -> Iterator[LocalCyclesServer]:
    """A running server on a fresh ledger file, with the admin API enabled."""
    server = LocalCyclesServer(
        str(tmp_path / "cycles.sqlite3"), admin_key=LC_ADMIN_KEY, clock=lc_clock
    ).start()
    yield server
    server.stop()
    server.ledger.close()


@pytest.fixture
def lc_ledger(lc_server: LocalCyclesServer) -> LocalLedger:
    return lc_server.ledger


@pytest.fixture
def lc_api_key(lc_ledger: LocalLedger) -> str:
    """An API key of tenant ``acme`` (no budgets: tests set the ones they need)."""
    lc_ledger.create_tenant(LC_TENANT)
    return lc_ledger.create_api_key(LC_TENANT)


@pytest.fixture
def lc_client_factory(
    lc_server: LocalCyclesServer, tmp_path: Path
) -> Iterator[Callable[..., CyclesClient]]:
    """Build real runcycles clients for the server: ``make(api_key, **config_overrides)``."""
    clients: list[CyclesClient] = []

    def make(api_key: str, **overrides: Any) -> CyclesClient:
        settings: dict[str, Any] = {
            "base_url": lc_server.base_url,
            "api_key": api_key,
            "retry_enabled": False,
            "retry_flush_timeout": 0,
            "journal_dir": str(tmp_path / "journal"),
            "read_timeout": 10.0,
        }
        settings.update(overrides)
        client = CyclesClient(CyclesConfig(**settings))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def lc_client(lc_client_factory: Callable[..., CyclesClient], lc_api_key: str) -> CyclesClient:
    """A runcycles client authenticated as tenant ``acme``."""
    return lc_client_factory(lc_api_key)


@pytest.fixture
def lc_http(lc_server: LocalCyclesServer) -> Iterator[httpx.Client]:
    """Raw HTTP access (no auth header) for malformed-input and admin tests."""
    with httpx.Client(base_url=lc_server.base_url, timeout=10.0) as client:
        yield client
