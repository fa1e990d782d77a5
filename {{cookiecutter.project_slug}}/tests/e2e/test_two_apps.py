"""Two apps in one process each talk to their own Cycles server (nothing is module-global)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from conftest import TENANTS, Provisioner, auth_headers
from {{ cookiecutter.package_name }}.cycles.clients import close
from localcycles import LocalCyclesServer

BODY = {"prompt": "Which ledger am I on?", "max_tokens": 16}


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[LocalCyclesServer]:
    (tmp_path / "second").mkdir()
    server = LocalCyclesServer(str(tmp_path / "second" / "cycles.sqlite3")).start()
    yield server
    server.stop()
    server.ledger.close()


def test_two_apps_spend_on_their_own_servers(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    second_server: LocalCyclesServer,
    make_app: Callable[..., Flask],
) -> None:
    second = Provisioner(second_server.ledger)
    for tenant in TENANTS:
        second.tenant(tenant)
    first_app = make_app(cycles_server.base_url)
    second_app = make_app(second_server.base_url)

    response = first_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
    spent_first = provisioner.balance("acme")["spent"]
    assert second.balance("acme")["spent"] == 0

    for _ in range(2):
        response = second_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
        assert response.status_code == 200
    assert provisioner.balance("acme")["spent"] == spent_first
    assert second.balance("acme")["spent"] == 2 * spent_first

    # Closing one app leaves the other working.
    close(first_app)
    response = second_app.test_client().post("/chat", json=BODY, headers=auth_headers("acme"))
    assert response.status_code == 200
