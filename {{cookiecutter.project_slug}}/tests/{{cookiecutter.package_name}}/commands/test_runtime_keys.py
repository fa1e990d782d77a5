"""Runtime key lifetimes: `flask cycles provision` sets and records each key's expiry,
rotates a key near its end, and `check-keys` / `balances` warn ahead of it.

The app's wall clock is set per test (``key_expiry.CLOCK``): weeks pass without waiting. The
Cycles server is the embedded one over real HTTP; where a test needs the reference admin
server's key lookup (``POST /v1/auth/validate``), a stub answers it as the reference does
and passes every other request on to the embedded server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from conftest import (
    ADMIN_KEY,
    CyclesStub,
    Provisioner,
    StubReply,
    StubRequest,
    cycles_key,
    cycles_tenant_of,
    forward_to,
)
from {{ cookiecutter.package_name }}.commands.keys_file import read_keys_file, recorded_keys
from {{ cookiecutter.package_name }}.config import app_settings
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK, iso
from localcycles import LocalCyclesServer

# The Cycles tenant that owns acme's key (the operator, or acme itself).
OWNER = cycles_tenant_of("acme")
# How a key is shown: its first 14 characters (the reference admin API's key_prefix).
SHOWN_KEY = r"\S{14}\.\.\."


@pytest.fixture
def now() -> datetime:
    """Today, to the second: keys made in a test must work on the server's real clock."""
    return datetime.now(UTC).replace(microsecond=0)


def at(app: Flask, moment: datetime) -> Flask:
    """Set ``app``'s wall clock to ``moment``."""
    app.extensions[CLOCK] = lambda: moment
    return app


def stack(make_app: Callable[..., Flask], server: LocalCyclesServer, **env: str) -> Flask:
    """An app pointed at ``server`` as at a real stack (admin + runtime)."""
    admin = {"CYCLES_ADMIN_URL": server.base_url, "CYCLES_ADMIN_API_KEY": ADMIN_KEY}
    return make_app(server.base_url, **{**admin, **env})


def run(app: Flask, *args: str, exit_code: int = 0) -> Result:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == exit_code, result.output
    return result


def provision(app: Flask, keys_file: Path) -> str:
    return run(app, "cycles", "provision", "--keys-file", str(keys_file)).output


def key_line(output: str, cycles_tenant: str = OWNER) -> str:
    (line,) = [x for x in output.splitlines() if x.startswith(f"api key for {cycles_tenant}:")]
    return line


def day(moment: datetime) -> str:
    return moment.date().isoformat()


def test_a_new_key_gets_the_configured_lifetime_printed_and_recorded(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path, now: datetime
) -> None:
    keys_file = tmp_path / "cycles.env"
    app = at(stack(make_app, cycles_server, CYCLES_KEY_TTL_DAYS="30"), now)
    output = provision(app, keys_file)
    ends = now + timedelta(days=30)
    expected = rf"api key for {OWNER}: created {SHOWN_KEY} expires {day(ends)} \(30 days left\)"
    assert re.fullmatch(expected, key_line(output))
    recorded = read_keys_file(keys_file)
    assert f"{OWNER}={iso(ends)}" in recorded["CYCLES_KEY_EXPIRES_AT"].split(",")
    # The app started from the keys file knows its key's end.
    configured = make_app(cycles_server.base_url, **recorded)
    assert app_settings(configured).cycles_key_expires_at[OWNER] == ends


def test_a_rerun_reuses_a_key_far_from_its_end_and_rotates_one_near_it(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path, now: datetime
) -> None:
    keys_file = tmp_path / "cycles.env"
    app = at(stack(make_app, cycles_server), now)
    provision(app, keys_file)
    first = read_keys_file(keys_file)
    ends = now + timedelta(days=90)  # the default lifetime

    at(app, now + timedelta(days=70))  # 20 days left: more than CYCLES_KEY_WARN_DAYS (14)
    line = key_line(provision(app, keys_file))
    shown = recorded_keys(first)[OWNER][:14] + "..."
    assert line.endswith(f"exists (reused) {shown} expires {day(ends)} (20 days left)")
    assert read_keys_file(keys_file) == first

    later = now + timedelta(days=80)  # 10 days left: rotated
    line = key_line(provision(at(app, later), keys_file))
    renewed = later + timedelta(days=90)
    assert f"expires {day(ends)} (10 days left), within CYCLES_KEY_WARN_DAYS=14: rotated: " in line
    assert "created " in line and f"expires {day(renewed)} (90 days left)" in line
    second = read_keys_file(keys_file)
    old_key, new_key = recorded_keys(first)[OWNER], recorded_keys(second)[OWNER]
    assert new_key != old_key
    assert f"{OWNER}={iso(renewed)}" in second["CYCLES_KEY_EXPIRES_AT"].split(",")
    # Both keys work: the old one until it ends, so running instances keep serving.
    assert cycles_server.ledger.authenticate(new_key) == OWNER
    assert cycles_server.ledger.authenticate(old_key) == OWNER


def test_warn_days_zero_never_rotates_on_its_own(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path, now: datetime
) -> None:
    keys_file = tmp_path / "cycles.env"
    app = at(stack(make_app, cycles_server, CYCLES_KEY_WARN_DAYS="0"), now)
    provision(app, keys_file)
    first = read_keys_file(keys_file)
    provision(at(app, now + timedelta(days=89)), keys_file)
    assert read_keys_file(keys_file) == first


def reference_validate(
    forward: Callable[[StubRequest], StubReply], answer: dict[str, Any]
) -> Callable[[StubRequest], StubReply]:
    """The reference admin server's key lookup (``POST /v1/auth/validate``, admin key)
    answering ``answer``; every other request goes on to ``forward``."""

    def respond(request: StubRequest) -> StubReply:
        if request.path == "/v1/auth/validate":
            return StubReply(200, answer)
        return forward(request)

    return respond


def test_the_admin_apis_word_on_a_keys_expiry_wins(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    now: datetime,
) -> None:
    """No expiry is recorded for the app's key, but the admin API knows it: 5 days left."""
    ends = now + timedelta(days=5)
    answer = {
        "valid": True,
        "tenant_id": OWNER,
        "key_id": "key_0123456789abcdef",
        "permissions": ["reservations:create", "balances:read"],
        "expires_at": iso(ends),
    }
    admin = cycles_stub(reference_validate(forward_to(cycles_server.base_url), answer))
    app = at(stack(make_app, cycles_server, CYCLES_ADMIN_URL=admin.base_url), now)
    output = run(app, "cycles", "provision").output
    line = key_line(output)
    assert f"{cycles_key(OWNER)[:14]}... expires {day(ends)} (5 days left), within " in line
    assert "rotated: created" in line
    assert {"key_secret": cycles_key(OWNER)} in admin.bodies("/v1/auth/validate")


def test_a_key_the_admin_api_calls_expired_is_replaced(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    now: datetime,
) -> None:
    answer = {"valid": False, "tenant_id": OWNER, "reason": "KEY_EXPIRED"}
    admin = cycles_stub(reference_validate(forward_to(cycles_server.base_url), answer))
    app = at(stack(make_app, cycles_server, CYCLES_ADMIN_URL=admin.base_url), now)
    line = key_line(run(app, "cycles", "provision").output)
    assert re.fullmatch(rf"api key for {OWNER}: created {SHOWN_KEY} expires .*", line)


def test_check_keys_shows_days_left_and_fails_near_the_end(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], now: datetime
) -> None:
    ends = now + timedelta(days=30)
    app = make_app(cycles_server.base_url, CYCLES_KEY_EXPIRES_AT=f"{OWNER}={iso(ends)}")
    result = run(at(app, now), "cycles", "check-keys")
    assert f"api key for {OWNER}: expires {day(ends)} (30 days left)" in result.output

    result = run(at(app, now + timedelta(days=20)), "cycles", "check-keys", exit_code=1)
    assert (
        f"Error: The Cycles API key of {OWNER} expires {day(ends)} (10 days left): "
        "run `flask cycles provision` to rotate it."
    ) in result.output

    result = run(at(app, ends + timedelta(hours=1)), "cycles", "check-keys", exit_code=1)
    assert f"Error: The Cycles API key of {OWNER} expired {day(ends)}: " in result.output


def test_check_keys_says_when_no_expiry_is_recorded(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    result = run(make_app(cycles_server.base_url), "cycles", "check-keys")
    assert f"api key for {OWNER}: expiry not recorded (CYCLES_KEY_EXPIRES_AT)" in result.output


def test_balances_warn_of_a_key_near_its_end(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    now: datetime,
) -> None:
    ends = now + timedelta(days=3)
    app = make_app(cycles_server.base_url, CYCLES_KEY_EXPIRES_AT=f"{OWNER}={iso(ends)}")
    result = run(at(app, now), "cycles", "balances")
    assert result.stdout.splitlines()[0].split()[:2] == ["TENANT", "SCOPE"]
    assert result.stderr == (
        f"Warning: The Cycles API key of {OWNER} expires {day(ends)} (3 days left): "
        "run `flask cycles provision` to rotate it.\n"
    )
    quiet = run(at(app, now - timedelta(days=30)), "cycles", "balances")
    assert quiet.stderr == ""


def test_a_bad_recorded_expiry_is_a_one_line_error(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    keys_file = tmp_path / "cycles.env"
    keys_file.write_text(f"CYCLES_KEY_EXPIRES_AT={OWNER}=soon\n")
    result = run(stack(make_app, cycles_server), "cycles", "provision", "--keys-file",
                 str(keys_file), exit_code=1)  # fmt: skip
    assert result.output == (
        f"Error: {keys_file}: CYCLES_KEY_EXPIRES_AT: '{OWNER}' has no valid date-time\n"
    )


def test_the_compose_bootstrap_asks_the_admin_api_about_its_recorded_key_only(
    cycles_server: LocalCyclesServer,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    tmp_path: Path,
    now: datetime,
) -> None:
    """As compose runs it: development mode (an embedded ledger of its own) against the
    admin server. The embedded ledger's keys are never the admin server's: not asked about
    (the reference would log each as a failed authentication)."""
    ends = now + timedelta(days=3)
    answer = {"valid": True, "tenant_id": OWNER, "permissions": [], "expires_at": iso(ends)}
    admin = cycles_stub(reference_validate(forward_to(cycles_server.base_url), answer))
    app = make_app(
        "local",
        CYCLES_ADMIN_URL=admin.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
        CYCLES_LOCAL_DB=str(tmp_path / "embedded.sqlite3"),
    )
    keys_file = tmp_path / "cycles.env"
    provision(at(app, now), keys_file)
    assert admin.bodies("/v1/auth/validate") == []
    recorded = recorded_keys(read_keys_file(keys_file))

    line = key_line(provision(app, keys_file))
    asked = [body["key_secret"] for body in admin.bodies("/v1/auth/validate")]
    assert asked[0] == recorded[OWNER]
    assert set(asked) <= set(recorded.values()), "only keys of the admin server are asked"
    assert f"expires {day(ends)} (3 days left), within CYCLES_KEY_WARN_DAYS=14: rotated" in line
