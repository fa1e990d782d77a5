"""`flask cycles ...` against a Cycles server over real HTTP.

The embedded server speaks the reference admin API, so provisioning here exercises the
exact requests the compose bootstrap sends to cycles-admin.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import FlaskGroup

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.commands.keys_file import read_keys_file, recorded_keys
from {{ cookiecutter.package_name }}.cycles.clients import close
from localcycles import LocalCyclesServer
from support.callers_kit import caller_settings
from support.tenancy_kit import budget_scope, cycles_settings, cycles_tenant_of

ADMIN_KEY = "test-admin-key"
TENANTS = ("acme", "globex")
COLUMNS = ["ALLOCATED", "SPENT", "RESERVED", "DEBT", "REMAINING"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalCyclesServer]:
    with LocalCyclesServer(str(tmp_path / "ledger.sqlite3"), admin_key=ADMIN_KEY) as running:
        yield running


def make_app(server_url: str, tmp_path: Path, **env: str) -> Flask:
    """An app pointed at ``server_url`` as at a real Cycles stack (admin + runtime)."""
    settings = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": server_url,
        "CYCLES_ADMIN_URL": server_url,
        "CYCLES_ADMIN_API_KEY": ADMIN_KEY,
        "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        **caller_settings(TENANTS),
        # Keys this server does not know: placeholders until provisioning made the real ones.
        **cycles_settings(TENANTS),
    }
    return create_app({**settings, **env})


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def provision(server: LocalCyclesServer, tmp_path: Path) -> tuple[Flask, Path]:
    """Provision through the admin API; return an app configured with the new keys."""
    keys_file = tmp_path / "cycles.env"
    result = invoke(
        make_app(server.base_url, tmp_path),
        *("cycles", "provision", "--budget-usd", "5.00", "--keys-file", str(keys_file)),
    )
    assert result.exit_code == 0, result.output
    return make_app(server.base_url, tmp_path, **read_keys_file(keys_file)), keys_file


def printed_settings(output: str) -> dict[str, str]:
    """The NAME=value lines ``provision`` prints for the app's environment."""
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", output, re.MULTILINE))


def test_provision_creates_tenants_keys_and_budgets(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    app, env_file = provision(server, tmp_path)
    keys = read_keys_file(env_file)
    # Each Cycles tenant's key is recorded, under the settings this isolation uses.
    owners = {server.ledger.authenticate(key): key for key in recorded_keys(keys).values()}
    assert set(owners) == {cycles_tenant_of(t) for t in TENANTS}
    scopes = [budget_scope(t) for t in TENANTS]
    assert env_file.stat().st_mode & 0o077 == 0, "the key file must be private"

    result = invoke(app, "cycles", "balances")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["TENANT", "SCOPE", *COLUMNS]
    for tenant, scope in zip(TENANTS, scopes, strict=True):
        assert any(row.split()[:2] == [tenant, scope] and row.endswith("$5.00") for row in rows)


def test_provision_is_safe_to_rerun_and_keeps_keys(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    app, env_file = provision(server, tmp_path)
    before = env_file.read_text()
    result = invoke(app, "cycles", "provision", "--keys-file", str(env_file))
    assert result.exit_code == 0, result.output
    assert "exists (unchanged)" in result.output
    assert "exists (reused)" in result.output and "created" not in result.output
    assert env_file.read_text() == before


def test_provision_without_a_keys_file_reuses_the_apps_working_keys(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    """The app's environment carries the keys: a re-run prints them, it makes no new ones."""
    app, env_file = provision(server, tmp_path)
    for _ in range(2):
        result = invoke(app, "cycles", "provision")
        assert result.exit_code == 0, result.output
        assert "created" not in result.output
        assert printed_settings(result.output) == read_keys_file(env_file)


def test_rotate_keys_makes_new_keys_and_says_so(server: LocalCyclesServer, tmp_path: Path) -> None:
    app, env_file = provision(server, tmp_path)
    before = read_keys_file(env_file)
    result = invoke(app, "cycles", "provision", "--rotate-keys")
    assert result.exit_code == 0, result.output
    assert "rotated" in result.output
    after = printed_settings(result.output)
    assert after.keys() == before.keys() and after != before
    # The new keys work: an app configured with them reads its balances.
    balances = invoke(make_app(server.base_url, tmp_path, **after), "cycles", "balances")
    assert balances.exit_code == 0, balances.output


def test_bootstrap_from_development_mode_keeps_the_admin_servers_keys(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    """The compose bootstrap runs the app in development mode (embedded ledger) against a
    separate admin server: the keys it keeps are that server's, reused on every re-run."""
    keys_file = tmp_path / "cycles.env"
    app = create_app(
        {
            "APP_ENV": "testing",
            "CYCLES_ADMIN_URL": server.base_url,
            "CYCLES_ADMIN_API_KEY": ADMIN_KEY,
            "CYCLES_LOCAL_DB": str(tmp_path / "embedded.sqlite3"),
            "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        }
    )
    try:
        outputs = []
        for _ in range(2):
            result = invoke(app, "cycles", "provision", "--keys-file", str(keys_file))
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
            keys = recorded_keys(read_keys_file(keys_file))
            assert keys and all(server.ledger.authenticate(k) == t for t, k in keys.items())
    finally:
        close(app)
    assert "created" in outputs[0] and "created" not in outputs[1]


def test_a_broken_keys_file_is_a_one_line_error(server: LocalCyclesServer, tmp_path: Path) -> None:
    keys_file = tmp_path / "cycles.env"
    keys_file.write_text("CYCLES_API_KEY='unterminated\n")
    app = make_app(server.base_url, tmp_path)
    result = invoke(app, "cycles", "provision", "--keys-file", str(keys_file))
    assert result.exit_code == 1
    assert result.output == f"Error: {keys_file}:1: not a NAME=value line\n"


def test_provision_no_longer_shadows_flasks_env_file_option(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    result = invoke(make_app(server.base_url, tmp_path), "cycles", "provision", "--env-file", "x")
    assert result.exit_code == 2
    assert "No such option '--env-file'" in result.output


def test_fund_adds_to_the_budget(server: LocalCyclesServer, tmp_path: Path) -> None:
    app, _ = provision(server, tmp_path)
    result = invoke(app, "cycles", "fund", "acme", "2.50")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("remaining $7.50")
    balances = invoke(app, "cycles", "balances", "acme")
    assert balances.exit_code == 0, balances.output
    assert [row.split()[-1] for row in balances.output.splitlines()[1:]] == ["$7.50"]


def test_provision_without_env_file_prints_the_settings(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    result = invoke(make_app(server.base_url, tmp_path), "cycles", "provision", "acme")
    assert result.exit_code == 0, result.output
    printed = printed_settings(result.output)
    assert recorded_keys(printed).keys() == {cycles_tenant_of("acme")}
    known = {"CYCLES_TENANT", "CYCLES_API_KEY", "CYCLES_TENANT_API_KEYS", "CYCLES_KEY_EXPIRES_AT"}
    assert set(printed) <= known


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("cycles", "provision", "--budget-usd", "lots"), "not an amount of US dollars"),
        (("cycles", "provision", "Not A Tenant"), "expected 3-64 lowercase"),
        (("cycles", "fund", "acme", "0.000000001"), "more than 8 decimals"),
        (("cycles", "fund", "acme", "0"), "must be more than $0"),
        (("cycles", "fund", "acme", "0.00"), "must be more than $0"),
        (("cycles", "fund", "acme", "--", "-1"), "not an amount of US dollars"),
        (("cycles", "fund", "Not A Tenant", "1"), "expected 3-64 lowercase"),
        (("cycles", "balances", "Not A Tenant"), "expected 3-64 lowercase"),
    ],
)
def test_bad_arguments_are_usage_errors(
    server: LocalCyclesServer, tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    result = invoke(make_app(server.base_url, tmp_path), *args)
    assert result.exit_code == 2
    assert expected in result.output


def test_http_failures_are_one_line_errors(server: LocalCyclesServer, tmp_path: Path) -> None:
    wrong_key = make_app(server.base_url, tmp_path, CYCLES_ADMIN_API_KEY="wrong")
    result = invoke(wrong_key, "cycles", "provision")
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "Traceback" not in result.output

    unreachable = f"http://127.0.0.1:{free_port()}"
    down = make_app(unreachable, tmp_path)
    for args in (("cycles", "provision"), ("cycles", "fund", "acme", "1")):
        result = invoke(down, *args)
        assert result.exit_code == 1, result.output
        assert "cannot reach the server" in result.output
        assert "Traceback" not in result.output
    result = invoke(down, "cycles", "balances")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: cannot read acme's balances: The budget service")
    assert "Traceback" not in result.output


def test_balances_of_a_tenant_the_app_does_not_serve_is_a_one_line_error(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    app, _ = provision(server, tmp_path)
    # Provisioned in Cycles, but the app holds no runtime key for it.
    assert invoke(app, "cycles", "provision", "initech").exit_code == 0
    result = invoke(app, "cycles", "balances", "initech")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        "Error: 'initech' is not a tenant of this app (it serves: acme, globex); "
        "add it to the app's tenant settings first"
    ]
    # Funding goes through the admin API only: any provisioned tenant can be topped up.
    assert invoke(app, "cycles", "fund", "initech", "1").exit_code == 0


def test_help_starts_no_ledger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`flask --help` builds the app to list its commands: that must not start the ledger."""
    ledger = tmp_path / "ledger.sqlite3"
    apps: list[Flask] = []

    def load_app() -> Flask:
        env = {"APP_ENV": "testing", "CYCLES_LOCAL_DB": str(ledger)}
        apps.append(create_app({**env, "CYCLES_JOURNAL_DIR": str(tmp_path / "journal")}))
        return apps[-1]

    flask_command = FlaskGroup(create_app=load_app)
    try:
        for args in (["--help"], ["cycles", "--help"], ["cycles", "provision", "--help"]):
            result = CliRunner().invoke(flask_command, args)
            assert result.exit_code == 0, result.output
            assert "Usage:" in result.output
    finally:
        for app in apps:
            close(app)
    assert apps, "the help was built without the app: nothing was checked"
    assert "DEVELOPMENT ledger" not in caplog.text
    assert not ledger.exists()


def test_every_help_line_is_whole(server: LocalCyclesServer, tmp_path: Path) -> None:
    app = make_app(server.base_url, tmp_path)
    result = invoke(app, "cycles", "--help")
    assert result.exit_code == 0, result.output
    commands = result.output.split("Commands:", 1)[1].strip().splitlines()
    assert [line.split()[0] for line in commands] == [
        "balances",
        "check-keys",
        "fund",
        "provision",
        "reset",
        "rollover",
        "set-budget",
    ]
    for line in commands:
        assert line.rstrip().endswith(".") and "..." not in line, line


def test_admin_url_is_required_with_a_cycles_server(
    server: LocalCyclesServer, tmp_path: Path
) -> None:
    app = make_app(server.base_url, tmp_path, CYCLES_ADMIN_URL="", CYCLES_ADMIN_API_KEY="")
    result = invoke(app, "cycles", "provision")
    assert result.exit_code == 1
    assert "CYCLES_ADMIN_URL is not set" in result.output
