"""Every numeric setting's range, its safe defaults, and settings that never show a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings

# The longest TTL, so that no timeout at the top of its range trips the TTL rule.
BASE = {"APP_ENV": "testing", "CYCLES_RESERVATION_TTL_MS": "3600000"}

# (variable, lowest accepted, highest accepted, Settings field)
RANGES = [
    ("DEFAULT_MAX_TOKENS", "1", "1000000", "default_max_tokens"),
    ("MAX_TOKENS_LIMIT", "1", "1000000", "max_tokens_limit"),
    ("CYCLES_DENY_CACHE_MS", "0", "60000", "cycles_deny_cache_ms"),
    ("CYCLES_LOCAL_PORT", "0", "65535", "cycles_local_port"),
    ("MAX_PROMPT_CHARS", "1", "10000000", "max_prompt_chars"),
    ("CYCLES_LOCAL_REPLAY_DAYS", "0.001", "3650", "cycles_local_replay_days"),
    ("CYCLES_CONNECT_TIMEOUT", "0.01", "60", "cycles_connect_timeout"),
    ("CYCLES_READ_TIMEOUT", "0.01", "300", "cycles_read_timeout"),
    ("LLM_TIMEOUT", "0.1", "600", "llm_timeout"),
    ("STREAM_WRITE_TIMEOUT", "0.1", "3600", "stream_write_timeout"),
]
# Settings that must agree with the one under test at its extremes.
COMPANIONS = {
    "DEFAULT_MAX_TOKENS": "MAX_TOKENS_LIMIT",
    "MAX_TOKENS_LIMIT": "DEFAULT_MAX_TOKENS",
}


def settings(tmp_path: Path, **env: str) -> Settings:
    return read_settings({**BASE, **env}, tmp_path)


def with_companion(name: str, value: str) -> dict[str, str]:
    env = {name: value}
    if name in COMPANIONS:
        env[COMPANIONS[name]] = value
    return env


def step_outside(value: str, direction: int) -> str:
    """A value just past ``value``: the smallest step the setting's own precision shows."""
    if "." in value:
        places = len(value.split(".")[1])
        return f"{float(value) + direction * 10**-places:.{places}f}"
    return str(int(value) + direction)


@pytest.mark.parametrize(("name", "low", "high", "field"), RANGES)
def test_each_range_accepts_its_ends_and_refuses_past_them(
    tmp_path: Path, name: str, low: str, high: str, field: str
) -> None:
    for value in (low, high):
        found = getattr(settings(tmp_path, **with_companion(name, value)), field)
        assert found == type(found)(value)
    for value in (step_outside(low, -1), step_outside(high, +1)):
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, **with_companion(name, value))
        shown = value if "." not in value else str(float(value))
        assert any(problem.startswith(f"{name}={shown}") for problem in info.value.problems)


def test_the_defaults_fail_closed_and_enforce(tmp_path: Path) -> None:
    found = read_settings({"APP_ENV": "testing"}, tmp_path)
    assert found.cycles_fail_open is False
    assert found.cycles_mode == "enforce"
    assert found.cycles_reservation_ttl_ms == 60_000
    assert found.cycles_deny_cache_ms == 1_000
    assert found.llm_timeout == 30


def test_no_secret_shows_in_the_settings_repr(tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-show"
    found = settings(
        tmp_path,
        CYCLES_API_KEY=secret,
        CYCLES_ADMIN_API_KEY=secret,
        METRICS_TOKEN=secret,
    )
    assert secret not in repr(found)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("1", True), ("true", True), ("YES", True), ("on", True)],
        *[("0", False), ("false", False), ("No", False), ("off", False)],
    ],
)
def test_a_flag_takes_each_spelling_of_yes_and_no(tmp_path: Path, text: str, value: bool) -> None:
    assert settings(tmp_path, CYCLES_FAIL_OPEN=text).cycles_fail_open is value


def test_a_long_bad_value_is_quoted_short_but_recognisably(tmp_path: Path) -> None:
    value = "shadowy" + "x" * 200
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, CYCLES_MODE=value)
    (problem,) = info.value.problems
    assert "'shadowyxxx" in problem and "...'" in problem
    assert len(problem) < 200


def test_the_reservation_ttl_has_the_reference_servers_ceiling(tmp_path: Path) -> None:
    assert settings(tmp_path).cycles_reservation_ttl_ms == 3_600_000
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, CYCLES_RESERVATION_TTL_MS="3600001")
    assert info.value.problems[0].startswith("CYCLES_RESERVATION_TTL_MS=3600001")
