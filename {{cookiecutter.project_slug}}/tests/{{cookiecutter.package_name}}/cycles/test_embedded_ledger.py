"""CYCLES_BASE_URL=local: the app starts, seeds and stops its own development ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask

from conftest import budget_scope
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import DEV_TENANTS, ConfigError
from {{ cookiecutter.package_name }}.cycles.clients import close, local_server
from {{ cookiecutter.package_name }}.cycles.embedded_ledger import EmbeddedCycles
from support.callers_kit import dev_auth_headers as dev_headers


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Development defaults, as on a fresh checkout (only the files are moved to tmp)."""
    env = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": "local",
        "CYCLES_LOCAL_DB": str(tmp_path / "ledger.sqlite3"),
        "CYCLES_LOCAL_PORT": "0",
        "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        "LLM_PROVIDER": "fake",
        "CYCLES_LOCAL_BUDGET_USD": "0.12345678",
    }
    return {**env, **extra}


@pytest.fixture
def local_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(local_env(tmp_path))
    yield app
    close(app)


def embedded(app: Flask) -> EmbeddedCycles:
    server = local_server(app)
    assert server is not None
    return server


def test_seeds_every_dev_tenant_with_the_exact_budget(local_app: Flask) -> None:
    ledger = embedded(local_app).ledger
    for tenant in DEV_TENANTS:
        found = ledger.budget(budget_scope(tenant))
        assert found is not None
        assert found["allocated"] == 12_345_678  # $0.12345678 in microcents, exactly


def test_serves_and_warns_that_it_is_a_development_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app(local_env(tmp_path))
        # The ledger starts on first use, not when the app is built (`flask --help` is fast).
        assert not any("DEVELOPMENT ledger" in r.getMessage() for r in caplog.records)
        response = app.test_client().post(
            "/chat", json={"prompt": "hello", "max_tokens": 8}, headers=dev_headers("acme")
        )
    try:
        assert any("DEVELOPMENT ledger" in r.getMessage() for r in caplog.records)
        assert response.status_code == 200, response.get_json()
        shown = app.test_client().get("/budget", headers=dev_headers("acme")).get_json()
        assert shown["balances"][0]["spent"] == response.get_json()["cost_usd_microcents"]
    finally:
        close(app)


def test_a_restart_keeps_spend_and_does_not_refill(tmp_path: Path) -> None:
    first = create_app(local_env(tmp_path))
    response = first.test_client().post(
        "/chat", json={"prompt": "hello", "max_tokens": 8}, headers=dev_headers("acme")
    )
    assert response.status_code == 200
    spent = embedded(first).ledger.budget(budget_scope("acme"))
    base_url = embedded(first).base_url
    close(first)
    with pytest.raises(httpx.TransportError):
        httpx.get(base_url + "/v1/balances", timeout=1)

    second = create_app(local_env(tmp_path, CYCLES_LOCAL_BUDGET_USD="99.00"))
    try:
        assert embedded(second).ledger.budget(budget_scope("acme")) == spent
    finally:
        close(second)


def test_cli_balances_use_the_embedded_ledger(local_app: Flask) -> None:
    result = local_app.test_cli_runner().invoke(args=["cycles", "balances"])
    assert result.exit_code == 0, result.output
    assert budget_scope("acme") in result.output and "$0.12345678" in result.output


def test_a_busy_port_names_the_setting(local_app: Flask, tmp_path: Path) -> None:
    port = embedded(local_app).server.port
    other = tmp_path / "other"
    other.mkdir()
    busy = create_app(local_env(other, CYCLES_LOCAL_PORT=str(port)))
    try:
        with pytest.raises(ConfigError, match="CYCLES_LOCAL_PORT"):
            local_server(busy)
        response = busy.test_client().get("/budget", headers=dev_headers("acme"))
        assert response.status_code == 503
        assert response.get_json()["error"] == "cycles_misconfigured"
    finally:
        close(busy)
