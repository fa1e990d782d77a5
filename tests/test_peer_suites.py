"""Tests that come from outside: runcycles' own live-server integration suite, at the
pinned runcycles version, run against the generated project's embedded Cycles server.

Upstream runs ``tests/integration`` of its source distribution nightly against the
reference servers (runcycles/.github, ``integration-nightly.yml``): it creates a tenant
(admin key), an API key with the runtime names plus ``admin:read``/``admin:write`` (admin
key), and a $1.00 budget (with that API key), then runs pytest with ``CYCLES_BASE_URL``,
``CYCLES_API_KEY`` and ``CYCLES_TENANT``. This test does the same against the embedded
server. The source distribution is fetched from the package registry at test time and
never stored in this repository.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.baking import TEMPLATE_DIR, Baker
from support.localhttp import http, wait_for

pytestmark = pytest.mark.slow

TENANT = "integration-test"
ADMIN_KEY = "test-admin-key"
# The key upstream's nightly job creates (name and permissions as it sends them).
NIGHTLY_KEY = {
    "tenant_id": TENANT,
    "name": "integration-key",
    "permissions": [
        "reservations:create", "reservations:commit", "reservations:release",
        "reservations:extend", "reservations:list", "balances:read", "admin:read",
        "admin:write",
    ],
}  # fmt: skip
NIGHTLY_BUDGET = {
    "scope": f"tenant:{TENANT}",
    "unit": "USD_MICROCENTS",
    "allocated": {"unit": "USD_MICROCENTS", "amount": 100_000_000},
}
# Tests of the peer suite that may not pass here, each with the difference that excuses
# it. Empty: every test passes against the embedded server.
SKIPS: dict[str, str] = {}


def pinned_runcycles() -> str:
    """The runcycles version requirements-dev.txt pins (the one the generated suites use)."""
    text = (TEMPLATE_DIR / "requirements-dev.txt").read_text()
    found = re.search(r"^runcycles==(\S+)$", text, re.MULTILINE)
    assert found, "requirements-dev.txt must pin runcycles==<version>"
    return found.group(1)


def fetch_sdist(version: str, into: Path) -> Path:
    """Download runcycles' source distribution with pip; return its unpacked folder."""
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--disable-pip-version-check", "-q", "-d", str(into), f"runcycles=={version}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert download.returncode == 0, download.stderr
    archive = into / f"runcycles-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / f"runcycles-{version}"


@pytest.fixture
def embedded_server(bake: Baker, tmp_path: Path) -> Iterator[str]:
    """The default bake's embedded Cycles server (``python -m localcycles``); yields its URL
    once its readiness probe answers, as the nightly job waits for the reference's."""
    project = bake()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    env["PYTHONPATH"] = str(project / "src")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcycles", "--db", str(tmp_path / "peer.sqlite3"),
         "--admin-key", ADMIN_KEY],
        env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), "the embedded Cycles server did not start"

        def ready() -> bool:
            return http("GET", url + "/actuator/health/readiness")[0] == 200

        wait_for(ready, 30, "the readiness probe to answer 200")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def provision(url: str) -> str:
    """Upstream's nightly provisioning, call for call; returns the API key."""
    admin = {"X-Admin-API-Key": ADMIN_KEY}
    tenant = {"tenant_id": TENANT, "name": "Integration Test Tenant"}
    status, _ = http("POST", url + "/v1/admin/tenants", tenant, admin)
    assert status in (200, 201), status
    status, key = http("POST", url + "/v1/admin/api-keys", NIGHTLY_KEY, admin)
    assert status == 201, key
    secret = key["key_secret"]
    status, budget = http(
        "POST", url + "/v1/admin/budgets", NIGHTLY_BUDGET, {"X-Cycles-API-Key": secret}
    )
    assert status == 201, budget
    return str(secret)


def test_runcycles_live_server_suite_passes_against_the_embedded_server(
    embedded_server: str, tmp_path: Path
) -> None:
    suite = fetch_sdist(pinned_runcycles(), tmp_path / "sdist") / "tests" / "integration"
    assert suite.is_dir(), "the source distribution has no tests/integration"
    key = provision(embedded_server)
    report = tmp_path / "peer.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    env.update(CYCLES_BASE_URL=embedded_server, CYCLES_API_KEY=key, CYCLES_TENANT=TENANT)
    deselect = [arg for name in SKIPS for arg in ("--deselect", f"{suite}/{name}")]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-p", "no:cacheprovider",
         "-p", "no:schemathesis", "-p", "no:xdist", f"--junitxml={report}", *deselect],
        cwd=suite.parent.parent, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    output = result.stdout[-4000:] + result.stderr[-2000:]
    counts = ET.parse(report).getroot().find("testsuite")
    assert counts is not None, output
    tests, failures, errors, skipped = (
        int(counts.get(name, "0")) for name in ("tests", "failures", "errors", "skipped")
    )
    # A skip inside the suite (requests missing, CYCLES_BASE_URL lost) would hide it all.
    assert (failures, errors, skipped) == (0, 0, 0), output
    assert result.returncode == 0 and tests > 0, output
