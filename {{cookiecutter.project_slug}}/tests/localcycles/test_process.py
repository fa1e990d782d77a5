"""``python -m localcycles``: its own process, started, probed and stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from localcycles import spawn_server_process


def test_a_spawned_server_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, url = spawn_server_process(str(tmp_path / "p.sqlite3"), admin_key="k")
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        tenants = httpx.get(f"{url}/v1/admin/tenants", headers={"X-Admin-API-Key": "k"})
        assert tenants.status_code == 200
    finally:
        proc.terminate()
    assert proc.wait(timeout=60) == 0


def test_help_names_every_option() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "localcycles", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for option in ("--db", "--host", "--port", "--admin-key", "--replay-window-days"):
        assert option in shown
