"""The embedded ledger's runtime keys: guessable only in development, never budget admins."""

from __future__ import annotations

from pathlib import Path

import httpx
from flask import Flask

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import DEV_TENANTS
from {{ cookiecutter.package_name }}.cycles.clients import close, local_server
from {{ cookiecutter.package_name }}.cycles.embedded_ledger import EmbeddedCycles, local_api_key
from localcycles import RUNTIME_PERMISSIONS


def start(tmp_path: Path, app_env: str) -> Flask:
    return create_app(
        {
            "APP_ENV": app_env,
            "CYCLES_BASE_URL": "local",
            "CYCLES_LOCAL_DB": str(tmp_path / "ledger.sqlite3"),
            "CYCLES_LOCAL_PORT": "0",
            "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
            "LLM_PROVIDER": "fake",
        }
    )


def embedded(app: Flask) -> EmbeddedCycles:
    server = local_server(app)
    assert server is not None
    return server


def runtime_keys(app: Flask) -> dict[str, str]:
    return {tenant: embedded(app).api_key_for(tenant) for tenant in DEV_TENANTS}


def test_outside_development_keys_are_random_and_kept_across_restarts(tmp_path: Path) -> None:
    first = start(tmp_path, "testing")
    try:
        keys = runtime_keys(first)
        for key in keys.values():
            principal = embedded(first).ledger.principal(key)
            assert principal is not None
            assert key != local_api_key(principal.tenant)
    finally:
        close(first)
    again = start(tmp_path, "testing")
    try:
        assert runtime_keys(again) == keys
    finally:
        close(again)


def test_development_keys_are_stable_and_revoked_once_the_ledger_leaves_development(
    tmp_path: Path,
) -> None:
    dev = start(tmp_path, "development")
    try:
        stable = runtime_keys(dev)
        ledger = embedded(dev).ledger
        tenants = {key: ledger.authenticate(key) for key in stable.values()}
        assert all(key == local_api_key(str(tenant)) for key, tenant in tenants.items())
    finally:
        close(dev)
    later = start(tmp_path, "testing")
    try:
        assert all(embedded(later).ledger.authenticate(key) is None for key in stable.values())
    finally:
        close(later)


def test_the_apps_runtime_keys_cannot_create_or_fund_budgets(tmp_path: Path) -> None:
    app = start(tmp_path, "testing")
    try:
        server = embedded(app)
        for key in runtime_keys(app).values():
            principal = server.ledger.principal(key)
            assert principal is not None
            assert principal.permissions == frozenset(RUNTIME_PERMISSIONS)
            scope = f"tenant:{principal.tenant}"
            credit = {"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 1}}
            resp = httpx.post(
                f"{server.base_url}/v1/admin/budgets/fund?scope={scope}&unit=USD_MICROCENTS",
                json=credit,
                headers={"X-Cycles-API-Key": key},
            )
            assert resp.status_code == 403
            assert resp.json()["error"] == "INSUFFICIENT_PERMISSIONS"
    finally:
        close(app)
