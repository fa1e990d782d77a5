"""The server object: serves on a port while running, admin routes only with an admin key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from localcycles import LocalCyclesServer


def test_it_serves_while_running_and_frees_the_port_when_stopped(tmp_path: Path) -> None:
    with LocalCyclesServer(str(tmp_path / "c.sqlite3")) as server:
        url = server.base_url
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "UP"}
        refused = httpx.get(f"{url}/v1/admin/tenants", headers={"X-Admin-API-Key": "any"})
        assert refused.status_code == 401
        assert "started without one" in refused.json()["message"]
    server.ledger.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=10)
