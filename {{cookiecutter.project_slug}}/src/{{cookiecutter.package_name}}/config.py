"""Settings read from the environment and validated once, at start-up.

Every setting is an environment variable (see ``.env.example``). A missing or invalid value
raises :class:`ConfigError` naming the variable, so a misconfigured deployment fails on
boot instead of on its first request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

AppEnv = Literal["development", "testing", "production"]
TenantAuth = Literal["api_key", "trusted_header"]
TenantIsolation = Literal["workspace", "tenant"]

# Chosen when the project was generated; changing them means changing code, not settings.
TENANT_AUTH: TenantAuth = "{{ cookiecutter.tenant_auth }}"
TENANT_ISOLATION: TenantIsolation = "{{ cookiecutter.tenant_isolation }}"
DEFAULT_LLM_PROVIDER = "{{ cookiecutter.llm_provider }}"
DEFAULT_CYCLES_APP = "{{ cookiecutter.cycles_app }}"

# Tenant ids end up in Cycles scopes (lower-cased there), URLs and logs: keep them plain,
# and lowercase only so that "Acme" and "acme" can never share one budget. The character
# set and length are what Cycles admin servers accept for a tenant id, so one id works in
# both isolation modes.
TENANT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TENANT_ID_RULE = "1-64 lowercase letters, digits or '-', starting with a letter or digit"
LOCAL_CYCLES = "local"

# Development defaults: used only with the embedded ledger outside production.
DEV_TENANTS = ("acme", "globex")
DEV_OPERATOR_TENANT = "operator"


def dev_caller_key(tenant: str) -> str:
    """The development API key a caller presents for ``tenant`` (never used in production)."""
    return f"dev-key-{tenant}"


def hash_api_key(key: str) -> str:
    """Callers' API keys are stored only as SHA-256 hex digests."""
    return hashlib.sha256(key.encode()).hexdigest()


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    app_env: AppEnv
    instance_path: Path
    # Cycles connection
    cycles_base_url: str  # "local" means: start the embedded ledger
    cycles_api_key: str | None = field(repr=False)  # workspace isolation: the app's one key
    cycles_tenant: str  # workspace isolation: the Cycles tenant that owns all workspaces
    # tenant isolation: app tenant -> Cycles key
    cycles_tenant_api_keys: Mapping[str, str] = field(repr=False)
    cycles_app: str
    cycles_connect_timeout: float
    cycles_read_timeout: float
    cycles_fail_open: bool
    cycles_reservation_ttl_ms: int
    cycles_deny_cache_ms: int  # how long a budget denial is answered without Cycles; 0: off
    cycles_journal_dir: Path
    cycles_admin_url: str | None
    cycles_admin_api_key: str | None
    # Embedded ledger (development and tests only)
    cycles_local_db: Path
    cycles_local_port: int
    cycles_local_force: bool
    cycles_local_budget_usd: str
    # Callers
    tenant_key_hashes: Mapping[str, str]  # api_key auth: sha256(key) -> tenant
    tenants: tuple[str, ...]  # every tenant the app serves
    # LLM
    llm_provider: str
    llm_model: str
    llm_api_key: str | None = field(repr=False)
    llm_timeout: float
    max_prompt_chars: int
    default_max_tokens: int
    max_tokens_limit: int

    @property
    def uses_local_cycles(self) -> bool:
        return self.cycles_base_url == LOCAL_CYCLES

    @classmethod
    def from_env(cls, env: Mapping[str, str], instance_path: Path) -> Settings:
        return _Reader(env, instance_path).settings()


T = TypeVar("T")


class _Reader:
    """Reads one variable at a time so each error can name the variable at fault."""

    def __init__(self, env: Mapping[str, str], instance_path: Path) -> None:
        self.env = env
        self.instance_path = instance_path

    def raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def parse(self, name: str, default: str, convert: Callable[[str], T], expected: str) -> T:
        text = self.raw(name) or default
        try:
            return convert(text)
        except (ValueError, TypeError):
            raise ConfigError(f"{name}={text!r} is invalid: expected {expected}") from None

    def number(self, name: str, default: str, low: float, high: float) -> float:
        value = self.parse(name, default, float, "a number")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value!r} is out of range: expected {low}..{high}")
        return value

    def integer(self, name: str, default: str, low: int, high: int) -> int:
        value = self.parse(name, default, int, "a whole number")
        if not low <= value <= high:
            raise ConfigError(f"{name}={value!r} is out of range: expected {low}..{high}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        text = (self.raw(name) or str(default)).lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={text!r} is invalid: expected true or false")

    def tenant_id(self, name: str, value: str) -> str:
        if not TENANT_ID_RE.fullmatch(value):
            raise ConfigError(f"{name}: tenant id {value!r} is invalid: expected {TENANT_ID_RULE}")
        return value

    def pairs(self, name: str) -> dict[str, str]:
        """Parse ``tenant=value,tenant=value`` into a dict."""
        result: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in (self.raw(name) or "").split(","))):
            tenant, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not value:
                raise ConfigError(f"{name}: entry {item.split('=')[0]!r} must be tenant=value")
            if tenant in result:
                raise ConfigError(f"{name}: tenant {tenant!r} is listed twice")
            result[self.tenant_id(name, tenant)] = value
        return result

    def settings(self) -> Settings:
        app_env = self.raw("APP_ENV") or "development"
        if app_env not in ("development", "testing", "production"):
            raise ConfigError(
                f"APP_ENV={app_env!r} is invalid: expected development, testing or production"
            )
        production = app_env == "production"
        base_url = (self.raw("CYCLES_BASE_URL") or LOCAL_CYCLES).rstrip("/")
        local = base_url == LOCAL_CYCLES
        if not local and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", base_url):
            raise ConfigError(
                f"CYCLES_BASE_URL={base_url!r} is invalid: expected http(s)://host[:port] or local"
            )
        force_local = self.flag("CYCLES_LOCAL_FORCE", False)
        if production and local and not force_local:
            raise ConfigError(
                "CYCLES_BASE_URL is not set: production needs a real Cycles server "
                "(set CYCLES_LOCAL_FORCE=true to run the embedded development ledger anyway)"
            )
        dev_defaults = local and not production

        cycles_tenant = self.tenant_id(
            "CYCLES_TENANT", self.raw("CYCLES_TENANT") or DEV_OPERATOR_TENANT
        )
        cycles_api_key = self.raw("CYCLES_API_KEY")
        tenant_api_keys = self.pairs("CYCLES_TENANT_API_KEYS")
        if TENANT_ISOLATION == "workspace" and not local:
            for name in ("CYCLES_API_KEY", "CYCLES_TENANT"):
                if not self.raw(name):
                    raise ConfigError(f"{name} is required when CYCLES_BASE_URL is a server")
        if TENANT_ISOLATION == "tenant" and not local and not tenant_api_keys:
            raise ConfigError(
                "CYCLES_TENANT_API_KEYS is required when CYCLES_BASE_URL is a server: "
                "one tenant=cycles-api-key pair per tenant"
            )

        key_hashes, tenants = self.callers(dev_defaults, tenant_api_keys)
        if TENANT_ISOLATION == "tenant" and not local:
            missing = sorted(set(tenants) - set(tenant_api_keys))
            if missing:
                raise ConfigError(
                    f"CYCLES_TENANT_API_KEYS has no Cycles API key for tenant(s) {missing}"
                )

        provider = (self.raw("LLM_PROVIDER") or DEFAULT_LLM_PROVIDER).lower()
        llm_key_name = f"{provider.upper()}_API_KEY"
        llm_api_key = self.raw(llm_key_name) if provider != "fake" else None
        if provider != "fake" and not llm_api_key:
            if production:
                raise ConfigError(f"{llm_key_name} is required for LLM_PROVIDER={provider}")
            provider = "fake"  # development without a key: the offline fake stands in

        default_max_tokens = self.integer("DEFAULT_MAX_TOKENS", "512", 1, 1_000_000)
        max_tokens_limit = self.integer("MAX_TOKENS_LIMIT", "4096", 1, 1_000_000)
        if default_max_tokens > max_tokens_limit:
            raise ConfigError("DEFAULT_MAX_TOKENS must not exceed MAX_TOKENS_LIMIT")
        budget_usd = self.raw("CYCLES_LOCAL_BUDGET_USD") or "5.00"
        if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,8})?", budget_usd):
            raise ConfigError(
                f"CYCLES_LOCAL_BUDGET_USD={budget_usd!r} is invalid: expected dollars like 5.00"
            )

        instance = self.instance_path
        return Settings(
            app_env=app_env,  # type: ignore[arg-type]  # checked against the Literal above
            instance_path=instance,
            cycles_base_url=base_url,
            cycles_api_key=cycles_api_key,
            cycles_tenant=cycles_tenant,
            cycles_tenant_api_keys=tenant_api_keys,
            cycles_app=self.raw("CYCLES_APP") or DEFAULT_CYCLES_APP,
            cycles_connect_timeout=self.number("CYCLES_CONNECT_TIMEOUT", "2", 0.01, 60),
            cycles_read_timeout=self.number("CYCLES_READ_TIMEOUT", "5", 0.01, 300),
            cycles_fail_open=self.flag("CYCLES_FAIL_OPEN", False),
            cycles_reservation_ttl_ms=self.integer(
                "CYCLES_RESERVATION_TTL_MS", "60000", 1_000, 86_400_000
            ),
            cycles_deny_cache_ms=self.integer("CYCLES_DENY_CACHE_MS", "1000", 0, 60_000),
            cycles_journal_dir=Path(
                self.raw("CYCLES_JOURNAL_DIR") or instance / "cycles-commit-journal"
            ),
            cycles_admin_url=self.raw("CYCLES_ADMIN_URL"),
            cycles_admin_api_key=self.raw("CYCLES_ADMIN_API_KEY"),
            cycles_local_db=Path(self.raw("CYCLES_LOCAL_DB") or instance / "cycles-ledger.sqlite3"),
            cycles_local_port=self.integer("CYCLES_LOCAL_PORT", "0", 0, 65_535),
            cycles_local_force=force_local,
            cycles_local_budget_usd=budget_usd,
            tenant_key_hashes=key_hashes,
            tenants=tenants,
            llm_provider=provider,
            llm_model=self.raw("LLM_MODEL") or "{{ cookiecutter.model }}",
            llm_api_key=llm_api_key,
            llm_timeout=self.number("LLM_TIMEOUT", "30", 0.1, 600),
            max_prompt_chars=self.integer("MAX_PROMPT_CHARS", "20000", 1, 10_000_000),
            default_max_tokens=default_max_tokens,
            max_tokens_limit=max_tokens_limit,
        )

    def callers(
        self, dev_defaults: bool, tenant_api_keys: Mapping[str, str]
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        """Who may call the app: key hashes (api_key auth) and the tenant list."""
{%- if cookiecutter.tenant_auth == "api_key" %}
        by_tenant = self.pairs("TENANT_API_KEYS")
        if not by_tenant and dev_defaults:
            by_tenant = {t: hash_api_key(dev_caller_key(t)) for t in DEV_TENANTS}
        if not by_tenant:
            raise ConfigError(
                "TENANT_API_KEYS is required: tenant=sha256-of-key pairs "
                "(create them with `flask tenants new-key TENANT`)"
            )
        for tenant, digest in by_tenant.items():
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(
                    f"TENANT_API_KEYS: the value for {tenant!r} must be a SHA-256 hex digest "
                    "(never the key itself)"
                )
        hashes = {digest: tenant for tenant, digest in by_tenant.items()}
        if len(hashes) != len(by_tenant):
            raise ConfigError("TENANT_API_KEYS: two tenants share one key")
        return hashes, tuple(by_tenant)
{%- else %}
        names = [t.strip() for t in (self.raw("TENANTS") or "").split(",") if t.strip()]
        if not names and TENANT_ISOLATION == "tenant":
            names = list(tenant_api_keys)
        if not names and dev_defaults:
            names = list(DEV_TENANTS)
        if not names:
            raise ConfigError("TENANTS is required: the comma-separated tenant ids the app serves")
        return {}, tuple(dict.fromkeys(self.tenant_id("TENANTS", t) for t in names))
{%- endif %}
