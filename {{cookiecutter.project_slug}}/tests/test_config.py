"""Settings: read from the environment, every bad value named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Settings
{%- if cookiecutter.tenant_auth == "api_key" %}, hash_api_key{% endif %}


def load(**env: str) -> Settings:
    return Settings.from_env(env, Path("/tmp/instance"))


def test_development_defaults_use_the_embedded_ledger_and_fake_llm() -> None:
    settings = load()
    assert settings.app_env == "development"
    assert settings.uses_local_cycles
    assert settings.llm_provider == "fake"
    assert settings.tenants
    assert settings.cycles_local_db == Path("/tmp/instance/cycles-ledger.sqlite3")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"CYCLES_BASE_URL": "not a url"}, "CYCLES_BASE_URL"),
        ({"CYCLES_CONNECT_TIMEOUT": "soon"}, "CYCLES_CONNECT_TIMEOUT"),
        ({"CYCLES_READ_TIMEOUT": "-1"}, "CYCLES_READ_TIMEOUT"),
        ({"CYCLES_FAIL_OPEN": "maybe"}, "CYCLES_FAIL_OPEN"),
        ({"CYCLES_RESERVATION_TTL_MS": "10"}, "CYCLES_RESERVATION_TTL_MS"),
        ({"CYCLES_DENY_CACHE_MS": "-1"}, "CYCLES_DENY_CACHE_MS"),
        ({"CYCLES_DENY_CACHE_MS": "60001"}, "CYCLES_DENY_CACHE_MS"),
        ({"CYCLES_LOCAL_PORT": "70000"}, "CYCLES_LOCAL_PORT"),
        ({"CYCLES_LOCAL_BUDGET_USD": "lots"}, "CYCLES_LOCAL_BUDGET_USD"),
        ({"CYCLES_TENANT": "Not Valid"}, "CYCLES_TENANT"),
        ({"MAX_PROMPT_CHARS": "0"}, "MAX_PROMPT_CHARS"),
        ({"DEFAULT_MAX_TOKENS": "9000"}, "DEFAULT_MAX_TOKENS"),
        ({"APP_ENV": "production"}, "CYCLES_BASE_URL"),
        ({"CYCLES_TENANT_API_KEYS": "acme"}, "CYCLES_TENANT_API_KEYS"),
{%- if cookiecutter.tenant_auth == "api_key" %}
        ({"TENANT_API_KEYS": "acme=plaintext-key"}, "TENANT_API_KEYS"),
        ({"TENANT_API_KEYS": "Bad Tenant=" + "0" * 64}, "TENANT_API_KEYS"),
{%- else %}
        ({"TENANTS": "acme,Bad Tenant"}, "TENANTS"),
{%- endif %}
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load(**env)


def test_production_needs_a_real_cycles_server_unless_forced() -> None:
    with pytest.raises(ConfigError, match="CYCLES_LOCAL_FORCE"):
        load(APP_ENV="production")


def test_remote_cycles_requires_credentials() -> None:
    with pytest.raises(ConfigError, match="CYCLES_"):
        load(CYCLES_BASE_URL="https://cycles.example.com")
{%- if cookiecutter.tenant_auth == "api_key" %}


def test_callers_keys_are_stored_hashed() -> None:
    digest = hash_api_key("secret-key")
    settings = load(TENANT_API_KEYS=f"acme={digest}")
    assert settings.tenant_key_hashes == {digest: "acme"}
    assert settings.tenants == ("acme",)
    assert "secret-key" not in repr(settings)
{%- else %}


def test_trusted_tenants_are_listed_explicitly() -> None:
    settings = load(TENANTS="acme, globex,acme")
    assert settings.tenants == ("acme", "globex")
    assert settings.tenant_key_hashes == {}
{%- endif %}
