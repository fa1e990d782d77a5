"""Settings: read from the environment; every bad value named at start-up, all at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import FlaskGroup

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import DEFAULT_LLM_PROVIDER, ConfigError
from {{ cookiecutter.package_name }}.config_callers import NAME as CALLERS_SETTING
from {{ cookiecutter.package_name }}.llm import app_provider
from localcycles import LocalCyclesServer
from support.config_kit import SECRET, SERVER, load, problems, quotes_no_secret

# The provider chosen when the project was generated, and what choosing it requires.
VENDOR_KEY = f"{DEFAULT_LLM_PROVIDER.upper()}_API_KEY"
VENDOR_KEY_SETTINGS = {} if DEFAULT_LLM_PROVIDER == "fake" else {VENDOR_KEY: SECRET}


def test_development_defaults_use_the_embedded_ledger_and_fake_llm() -> None:
    settings = load()
    assert settings.app_env == "development"
    assert settings.uses_local_cycles
    assert settings.llm_provider == "fake"
    assert settings.tenants == ("acme", "globex")
    assert settings.cycles_mode == "enforce"
    assert settings.cycles_app == "{{ cookiecutter.cycles_app }}"
    assert settings.cycles_local_db == Path("/tmp/instance/cycles-ledger.sqlite3")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"CYCLES_BASE_URL": "not a url"}, "CYCLES_BASE_URL"),
        ({"CYCLES_BASE_URL": "ftp://cycles"}, "CYCLES_BASE_URL"),
        ({"CYCLES_ADMIN_URL": "cycles-admin:7979"}, "CYCLES_ADMIN_URL"),
        ({"CYCLES_CONNECT_TIMEOUT": "soon"}, "CYCLES_CONNECT_TIMEOUT"),
        ({"CYCLES_READ_TIMEOUT": "-1"}, "CYCLES_READ_TIMEOUT"),
        ({"LLM_TIMEOUT": "nan"}, "LLM_TIMEOUT"),
        ({"CYCLES_FAIL_OPEN": "maybe"}, "CYCLES_FAIL_OPEN"),
        ({"CYCLES_MODE": "audit"}, "CYCLES_MODE"),
        ({"CYCLES_RESERVATION_TTL_MS": "10"}, "CYCLES_RESERVATION_TTL_MS"),
        ({"CYCLES_RESERVATION_TTL_MS": "9" * 5000}, "CYCLES_RESERVATION_TTL_MS"),
        ({"CYCLES_DENY_CACHE_MS": "9" * 1000}, "CYCLES_DENY_CACHE_MS"),
        ({"CYCLES_DENY_CACHE_MS": "-1"}, "CYCLES_DENY_CACHE_MS"),
        ({"CYCLES_DENY_CACHE_MS": "60001"}, "CYCLES_DENY_CACHE_MS"),
        ({"CYCLES_LOCAL_PORT": "70000"}, "CYCLES_LOCAL_PORT"),
        ({"CYCLES_LOCAL_BUDGET_USD": "lots"}, "CYCLES_LOCAL_BUDGET_USD"),
        ({"CYCLES_TENANT": "Not Valid"}, "CYCLES_TENANT"),
        ({"CYCLES_TENANT": "-leading-dash"}, "CYCLES_TENANT"),
        # The reference admin server: tenant ids of 3-64; scope ids end with a letter or digit.
        ({"CYCLES_TENANT": "ab"}, "CYCLES_TENANT"),
        ({"CYCLES_TENANT": "trailing-dash-"}, "CYCLES_TENANT"),
        ({"CYCLES_KEY_TTL_DAYS": "0"}, "CYCLES_KEY_TTL_DAYS"),
        ({"CYCLES_KEY_TTL_DAYS": "3651"}, "CYCLES_KEY_TTL_DAYS"),
        ({"CYCLES_KEY_WARN_DAYS": "-1"}, "CYCLES_KEY_WARN_DAYS"),
        ({"CYCLES_KEY_WARN_DAYS": "90"}, "CYCLES_KEY_WARN_DAYS"),
        ({"CYCLES_KEY_EXPIRES_AT": "operator=2027-03-02"}, "CYCLES_KEY_EXPIRES_AT"),
        ({"CYCLES_KEY_EXPIRES_AT": "operator=soon"}, "CYCLES_KEY_EXPIRES_AT"),
        ({"MAX_PROMPT_CHARS": "0"}, "MAX_PROMPT_CHARS"),
        ({"DEFAULT_MAX_TOKENS": "9000"}, "DEFAULT_MAX_TOKENS"),
        ({"LLM_PROVIDER": "mystery"}, "LLM_PROVIDER"),
        ({"APP_ENV": "production"}, "CYCLES_BASE_URL"),
        ({"CYCLES_TENANT_API_KEYS": "acme"}, "CYCLES_TENANT_API_KEYS"),
        # The callers' settings of this project's answer: test_config_callers.py.
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    found = problems(**env)
    assert len([problem for problem in found if problem.startswith(variable)]) == 1, found
    assert all(len(problem) < 300 and "\n" not in problem for problem in found), found
    # Anything else is what production or a Cycles server requires on top (listed too).
    others = [problem for problem in found if not problem.startswith(variable)]
    assert all(" is required" in problem for problem in others), found


@pytest.mark.parametrize(
    "value",
    ["x/workflow:y", "tenant:acme", "My-App", "-app", "app name", "a" * 129, "app\nname"],
)
def test_cycles_app_must_be_a_valid_cycles_subject_field(value: str) -> None:
    (problem,) = problems(CYCLES_APP=value)
    assert problem.startswith("CYCLES_APP=") and "subject field 'app'" in problem
    assert "\n" not in problem


@pytest.mark.parametrize("value", ["chat-api", "svc.v2_eu", "a" * 128, "7"])
def test_cycles_app_accepts_subject_field_values(value: str) -> None:
    assert load(CYCLES_APP=value).cycles_app == value


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    bad = {
        "APP_ENV": "staging",
        "CYCLES_CONNECT_TIMEOUT": "soon",
        "CYCLES_MODE": "audit",
        "CYCLES_APP": "x/workflow:y",
        "CYCLES_LOCAL_PORT": "-1",
        "MAX_PROMPT_CHARS": "lots",
    }
    with pytest.raises(ConfigError) as caught:
        load(**bad)
    error = caught.value
    assert sorted(problem.split("=")[0] for problem in error.problems) == sorted(bad)
    lines = str(error).splitlines()
    assert lines[0] == "6 configuration problems:"
    assert lines[1:] == [f"  {problem}" for problem in error.problems]
    assert isinstance(error, ValueError)  # callers that catch ValueError still do


def test_production_lists_every_missing_setting_together() -> None:
    """In order: the callers, the Cycles credentials (which ones: test_config_tenancy.py),
    the provider's key."""
    found = problems(APP_ENV="production", CYCLES_BASE_URL=SERVER)
    vendor = [] if DEFAULT_LLM_PROVIDER == "fake" else [found[-1]]
    callers, *credentials = found[: len(found) - len(vendor)]
    assert callers.startswith(f"{CALLERS_SETTING} is required"), found
    assert credentials, found
    for problem in credentials:
        assert problem.startswith("CYCLES_"), found
        assert " is required when CYCLES_BASE_URL is a server" in problem, found
    for problem in vendor:
        assert problem.startswith(f"{VENDOR_KEY} is required for LLM_PROVIDER="), found


def test_production_needs_a_real_cycles_server_unless_forced() -> None:
    found = problems(APP_ENV="production")
    assert found[0].startswith("CYCLES_BASE_URL") and "CYCLES_LOCAL_FORCE=true" in found[0]
    assert all(" is required" in problem for problem in found[1:]), found


def test_the_reservation_ttl_must_cover_the_provider_and_two_cycles_calls() -> None:
    timeouts = {"LLM_TIMEOUT": "10", "CYCLES_CONNECT_TIMEOUT": "1", "CYCLES_READ_TIMEOUT": "2"}
    minimum = 10_000 + 2 * (1_000 + 2_000 + 5_000) + 1_000  # see .env.example
    settings = load(**timeouts, CYCLES_RESERVATION_TTL_MS=str(minimum))
    assert settings.cycles_reservation_ttl_ms == minimum
    (problem,) = problems(**timeouts, CYCLES_RESERVATION_TTL_MS=str(minimum - 1))
    assert problem.startswith(f"CYCLES_RESERVATION_TTL_MS={minimum - 1} is too short")
    assert f"at least {minimum}" in problem
    # A timeout at fault is reported alone, not as a TTL problem it would cause.
    assert problems(LLM_TIMEOUT="soon", CYCLES_RESERVATION_TTL_MS="1000") == (
        "LLM_TIMEOUT='soon' is invalid: expected a number",
    )


SECRET_LEAKS = [
    ("CYCLES_TENANT_API_KEYS", SECRET),
    ("CYCLES_TENANT_API_KEYS", f"acme={SECRET},{SECRET}"),
    ("CYCLES_TENANT_API_KEYS", f"{SECRET}=="),
    ("CYCLES_TENANT_API_KEYS", f"Acme={SECRET}"),
    ("CYCLES_TENANT_API_KEYS", f"acme={SECRET},acme={SECRET}"),
    ("CYCLES_TENANT_API_KEYS", f"acme=,{SECRET}"),
    ("CYCLES_BASE_URL", f"https://user:{SECRET}@cycles.example.com"),
    ("CYCLES_BASE_URL", f"https://cycles.example.com/?key={SECRET}"),
    ("CYCLES_BASE_URL", SECRET),
    ("CYCLES_ADMIN_URL", f"http://admin:{SECRET}@cycles-admin:7979"),
    ("CYCLES_ADMIN_URL", SECRET),
]


@pytest.mark.parametrize(("variable", "value"), SECRET_LEAKS)
def test_no_message_quotes_a_secret(variable: str, value: str) -> None:
    env = {"APP_ENV": "production", "CYCLES_BASE_URL": SERVER, variable: value}
    found = problems(**env)
    assert any(problem.startswith(variable) for problem in found), found
    assert quotes_no_secret(found), found


def test_the_cli_prints_every_problem_without_a_traceback() -> None:
    """`flask ...` (and `flask run`) show ConfigError as a one-line-per-problem message."""
    bad = {"APP_ENV": "testing", "CYCLES_MODE": "audit", "CYCLES_APP": "x/y", "LLM_TIMEOUT": "-"}
    cli = FlaskGroup(create_app=lambda: create_app(bad))
    result = CliRunner().invoke(cli, ["routes"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "Error: 3 configuration problems:"
    assert [line.split("=")[0].split()[0] for line in lines[1:]] == [
        "CYCLES_APP",
        "CYCLES_MODE",
        "LLM_TIMEOUT",
    ]


def test_settings_repr_shows_no_key() -> None:
    settings = load(
        CYCLES_API_KEY=SECRET,
        CYCLES_ADMIN_API_KEY=SECRET,
        CYCLES_TENANT_API_KEYS=f"acme={SECRET}",
        LLM_PROVIDER=DEFAULT_LLM_PROVIDER,
        **VENDOR_KEY_SETTINGS,
    )
    assert SECRET not in repr(settings)


# Vendor keys a developer may have exported in their shell for other work.
SHELL_VENDOR_KEYS = {"OPENAI_API_KEY": "sk-from-the-shell", "ANTHROPIC_API_KEY": "sk-ant-shell"}


@pytest.mark.parametrize("app_env", ["development", "testing"])
def test_a_vendor_key_in_the_shell_leaves_development_on_the_fake(app_env: str) -> None:
    settings = load(APP_ENV=app_env, **SHELL_VENDOR_KEYS)
    assert settings.llm_provider == "fake"
    assert settings.llm_api_key is None


def test_an_app_started_with_a_vendor_key_exported_calls_the_fake(
    monkeypatch: pytest.MonkeyPatch,
    cycles_server: LocalCyclesServer,
    make_app: Callable[..., Flask],
) -> None:
    for name, value in SHELL_VENDOR_KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLM_PROVIDER", raising=False)
    app = make_app(cycles_server.base_url, LLM_PROVIDER="")  # as if never set
    assert app_provider(app).name == "fake"


@pytest.mark.skipif(DEFAULT_LLM_PROVIDER == "fake", reason="a fake-only project has no vendor")
def test_a_provider_chosen_outside_production_needs_its_key() -> None:
    settings = load(LLM_PROVIDER=DEFAULT_LLM_PROVIDER, **VENDOR_KEY_SETTINGS)
    assert (settings.llm_provider, settings.llm_api_key) == (DEFAULT_LLM_PROVIDER, SECRET)
    # Chosen without its key: refused, never quietly replaced by the fake.
    (problem,) = problems(LLM_PROVIDER=DEFAULT_LLM_PROVIDER)
    assert problem.startswith(f"{VENDOR_KEY} is required for LLM_PROVIDER={DEFAULT_LLM_PROVIDER}")
    assert "unset LLM_PROVIDER" in problem
