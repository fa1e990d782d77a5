"""The settings read from an environment, section by section, every problem reported at once.

Each section reads the variables of one concern into the :class:`~.config.Settings` fields
it fills (a ``TypedDict`` each, so the type checker holds the sections and ``Settings`` to
the same names and types). Reading never stops at a problem (``config_values.py``);
``read_settings`` raises one :class:`~.config.ConfigError` listing them all. Who the callers
are and which Cycles credentials a server needs are answers chosen when the project was
generated: ``config_callers.py`` and ``config_tenancy.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from .config import (
    APP_ENVS,
    CYCLES_FIXED_PHASES_S,
    CYCLES_MAX_RESERVATION_TTL_MS,
    CYCLES_MODES,
    CYCLES_SAFETY_MARGIN_MS,
    DEFAULT_CYCLES_APP,
    DEFAULT_LLM_PROVIDER,
    DEV_OPERATOR_TENANT,
    LLM_PROVIDERS,
    LOCAL_CYCLES,
    LOG_FORMATS,
    SUBJECT_FIELD_RE,
    SUBJECT_FIELD_RULE,
    URL_RE,
    URL_RULE,
    AppEnv,
    ConfigError,
    CyclesMode,
    LogFormat,
    Settings,
    minimum_reservation_ttl_ms,
    parse_instant,
)
from .config_alerts import read_alerts
from .config_callers import read_callers
from .config_end_users import read_end_users
from .config_models import read_models
from .config_plans import read_plans
from .config_tenancy import read_tenant_api_keys, require_cycles_credentials
from .config_values import CallerDefaults, CyclesCredentials, Tenancy, ValueReader, quoted
from .llm import prices

# Dollars with at most 8 decimal places, the embedded ledger's budget for each tenant.
USD_RE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,8})?")
DEFAULT_LOCAL_BUDGET_USD = "5.00"


def read_settings(env: Mapping[str, str], instance_path: Path) -> Settings:
    """The settings in ``env``, or a :class:`ConfigError` listing every problem."""
    read = ValueReader(env)
    deployment = read_deployment(read)
    production = deployment["app_env"] == "production"
    tenancy = read_tenancy(read, deployment)
    llm = read_llm(read, production)
    models = read_models(read, llm["llm_prices"])
    end_users = read_end_users(read, deployment["cycles_base_url"] == LOCAL_CYCLES)
    limits = read_request_limits(read)
    ledger = read_embedded_ledger(read, instance_path)
    cycles = read_cycles_calls(read, instance_path)
    keys = read_key_lifetimes(read)
    observability = read_observability(read, production)
    alerts = read_alerts(read, deployment["app_env"])
    budget_display = read_budget_display(read)
    local = deployment["cycles_base_url"] == LOCAL_CYCLES
    development = local and deployment["app_env"] == "development"
    plans = read_plans(read, tenancy["tenants"], development, instance_path)
    if read.problems:
        raise ConfigError(read.problems)
    return Settings(
        instance_path=instance_path,
        **deployment,
        **tenancy,
        **llm,
        **models,
        **end_users,
        **limits,
        **ledger,
        **cycles,
        **keys,
        **observability,
        **alerts,
        **budget_display,
        **plans,
    )


# --- where the app runs ----------------------------------------------------------------------


class DeploymentFields(TypedDict):
    app_env: AppEnv
    cycles_base_url: str
    cycles_local_force: bool


def read_deployment(read: ValueReader) -> DeploymentFields:
    """The environment, and the Cycles server (or the embedded ledger) it budgets with."""
    app_env = read.choice("APP_ENV", "development", APP_ENVS)
    base_url = read_cycles_base_url(read)
    force_local = read.flag("CYCLES_LOCAL_FORCE", False)
    if app_env == "production" and base_url == LOCAL_CYCLES and not force_local:
        read.note(
            "CYCLES_BASE_URL",
            "CYCLES_BASE_URL is not set (or is local): production needs a real Cycles "
            "server (set CYCLES_LOCAL_FORCE=true to run the embedded development ledger "
            "anyway)",
        )
    return DeploymentFields(
        app_env=app_env, cycles_base_url=base_url, cycles_local_force=force_local
    )


def read_cycles_base_url(read: ValueReader) -> str:
    """``local`` (the embedded ledger) or a server URL; a bad URL still means a server."""
    value = read.raw("CYCLES_BASE_URL")
    if value is None or value == LOCAL_CYCLES:
        return LOCAL_CYCLES
    if not URL_RE.fullmatch(value.rstrip("/")):
        problem = f"is not a valid URL: expected {URL_RULE}, or local"
        read.note("CYCLES_BASE_URL", f"CYCLES_BASE_URL {problem}")
    return value.rstrip("/")


# --- who calls, and the Cycles credentials that serve them -----------------------------------


class TenancyFields(TypedDict):
    cycles_tenant: str
    cycles_api_key: str | None
    cycles_tenant_api_keys: Mapping[str, str]
    tenant_key_hashes: Mapping[str, str]
    tenants: tuple[str, ...]


def read_tenancy(read: ValueReader, deployment: DeploymentFields) -> TenancyFields:
    """The callers (config_callers.py), and the credentials a Cycles server needs for them
    (config_tenancy.py); the development defaults apply to the embedded ledger only."""
    local = deployment["cycles_base_url"] == LOCAL_CYCLES
    tenant = read.raw("CYCLES_TENANT")
    cycles_tenant = read.tenant_id("CYCLES_TENANT", tenant or DEV_OPERATOR_TENANT)
    credentials = CyclesCredentials(
        tenant=tenant,
        api_key=read.raw("CYCLES_API_KEY"),
        tenant_api_keys=read_tenant_api_keys(read),
    )
    development = local and deployment["app_env"] != "production"
    defaults = CallerDefaults(development, credentials.tenant_api_keys.tenants)
    callers = read_callers(read, defaults)
    if not local:
        require_cycles_credentials(read, Tenancy(credentials, callers))
    return TenancyFields(
        cycles_tenant=cycles_tenant,
        cycles_api_key=credentials.api_key,
        cycles_tenant_api_keys=credentials.tenant_api_keys.keys,
        tenant_key_hashes=callers.key_hashes,
        tenants=callers.tenants,
    )


# --- the language model ----------------------------------------------------------------------


class LlmFields(TypedDict):
    llm_provider: str
    llm_model: str
    llm_prices: prices.ModelPrices
    llm_api_key: str | None


def read_llm(read: ValueReader, production: bool) -> LlmFields:
    provider, api_key = read_provider(read, production)
    model = read.raw("LLM_MODEL") or prices.MODEL
    return LlmFields(
        llm_provider=provider,
        llm_model=model,
        llm_prices=read_prices(read, model),
        llm_api_key=api_key,
    )


def read_provider(read: ValueReader, production: bool) -> tuple[str, str | None]:
    """The provider to use and its API key (never quoted: only the variable's name).

    Production calls the provider chosen at generation unless LLM_PROVIDER names
    another; development and tests use the offline fake unless LLM_PROVIDER names a
    provider, so a key exported in the shell never makes them spend money, and a
    provider chosen without its key is refused rather than quietly replaced.
    """
    default = DEFAULT_LLM_PROVIDER if production else "fake"
    provider = read.choice("LLM_PROVIDER", default, LLM_PROVIDERS)
    if provider == "fake":
        return provider, None
    key_name = f"{provider.upper()}_API_KEY"
    api_key = read.raw(key_name)
    if api_key is None:
        hint = "" if production else " (unset LLM_PROVIDER to use the offline fake)"
        read.note(key_name, f"{key_name} is required for LLM_PROVIDER={provider}{hint}")
        return "fake", None
    return provider, api_key


def read_prices(read: ValueReader, model: str) -> prices.ModelPrices:
    """What ``model`` costs: its listed prices, each replaced by its setting when set."""
    explicit: dict[str, int] = {}
    for kind, name in prices.PRICE_SETTINGS.items():
        text = read.raw(name)
        if text is None:
            continue
        try:
            explicit[kind] = prices.usd_per_million(text)
        except ValueError as reason:
            read.note(name, f"{name}={quoted(text)} is invalid: {reason}")
    if not read.fine(*prices.PRICE_SETTINGS.values()):
        return prices.GENERATED
    try:
        return prices.priced(model, explicit)
    except prices.PriceProblem as problem:
        read.note(problem.setting, str(problem))
        return prices.GENERATED


# --- what one request may ask for --------------------------------------------------------------


class RequestLimitFields(TypedDict):
    default_max_tokens: int
    max_tokens_limit: int
    max_prompt_chars: int
    stream_write_timeout: float
    fit_min_tokens: int


def read_request_limits(read: ValueReader) -> RequestLimitFields:
    """Token and prompt limits, and how long one stream write may wait on a slow client."""
    default_max_tokens = read.integer("DEFAULT_MAX_TOKENS", "512", 1, 1_000_000)
    max_tokens_limit = read.integer("MAX_TOKENS_LIMIT", "4096", 1, 1_000_000)
    limits_fine = read.fine("DEFAULT_MAX_TOKENS", "MAX_TOKENS_LIMIT")
    if limits_fine and default_max_tokens > max_tokens_limit:
        read.note(
            "DEFAULT_MAX_TOKENS",
            f"DEFAULT_MAX_TOKENS={default_max_tokens} must not exceed "
            f"MAX_TOKENS_LIMIT={max_tokens_limit}",
        )
    return RequestLimitFields(
        default_max_tokens=default_max_tokens,
        max_tokens_limit=max_tokens_limit,
        max_prompt_chars=read.integer("MAX_PROMPT_CHARS", "20000", 1, 10_000_000),
        stream_write_timeout=read.number("STREAM_WRITE_TIMEOUT", "30", 0.1, 3600),
        # Fit-to-budget (budget/fit.py): the fewest output tokens worth serving; 0: off.
        fit_min_tokens=read.integer("FIT_TO_BUDGET_MIN_TOKENS", "0", 0, 1_000_000),
    )


# --- the embedded ledger (development and tests) -------------------------------------------


class EmbeddedLedgerFields(TypedDict):
    cycles_local_db: Path
    cycles_local_port: int
    cycles_local_budget_usd: str
    cycles_local_replay_days: float


def read_embedded_ledger(read: ValueReader, instance_path: Path) -> EmbeddedLedgerFields:
    budget_usd = read.raw("CYCLES_LOCAL_BUDGET_USD") or DEFAULT_LOCAL_BUDGET_USD
    if not USD_RE.fullmatch(budget_usd):
        read.note(
            "CYCLES_LOCAL_BUDGET_USD",
            f"CYCLES_LOCAL_BUDGET_USD={quoted(budget_usd)} is invalid: expected dollars like 5.00",
        )
        budget_usd = DEFAULT_LOCAL_BUDGET_USD
    database = read.raw("CYCLES_LOCAL_DB")
    return EmbeddedLedgerFields(
        cycles_local_db=Path(database) if database else instance_path / "cycles-ledger.sqlite3",
        cycles_local_port=read.integer("CYCLES_LOCAL_PORT", "0", 0, 65_535),
        cycles_local_budget_usd=budget_usd,
        cycles_local_replay_days=read.number("CYCLES_LOCAL_REPLAY_DAYS", "7", 0.001, 3650),
    )


# --- how the app calls Cycles ----------------------------------------------------------------


class CyclesCallFields(TypedDict):
    cycles_app: str
    cycles_mode: CyclesMode
    cycles_connect_timeout: float
    cycles_read_timeout: float
    llm_timeout: float
    cycles_reservation_ttl_ms: int
    cycles_fail_open: bool
    cycles_deny_cache_ms: int
    cycles_journal_dir: Path
    cycles_admin_url: str | None
    cycles_admin_api_key: str | None


def read_cycles_calls(read: ValueReader, instance_path: Path) -> CyclesCallFields:
    """What the app's reservations say and how long each call and hold may take."""
    cycles_app = read.raw("CYCLES_APP") or DEFAULT_CYCLES_APP
    if not SUBJECT_FIELD_RE.fullmatch(cycles_app):
        read.note(
            "CYCLES_APP",
            f"CYCLES_APP={quoted(cycles_app)} is invalid: it is the Cycles subject field "
            f"'app': expected {SUBJECT_FIELD_RULE}",
        )
    mode = read.choice("CYCLES_MODE", "enforce", CYCLES_MODES)
    connect_timeout, read_timeout, llm_timeout, ttl_ms = read_timeouts(read)
    journal_dir = read.raw("CYCLES_JOURNAL_DIR")
    return CyclesCallFields(
        cycles_app=cycles_app,
        cycles_mode=mode,
        cycles_connect_timeout=connect_timeout,
        cycles_read_timeout=read_timeout,
        llm_timeout=llm_timeout,
        cycles_reservation_ttl_ms=ttl_ms,
        cycles_fail_open=read.flag("CYCLES_FAIL_OPEN", False),
        cycles_deny_cache_ms=read.integer("CYCLES_DENY_CACHE_MS", "1000", 0, 60_000),
        cycles_journal_dir=(
            Path(journal_dir) if journal_dir else instance_path / "cycles-commit-journal"
        ),
        cycles_admin_url=read.url("CYCLES_ADMIN_URL"),
        cycles_admin_api_key=read.raw("CYCLES_ADMIN_API_KEY"),
    )


def read_timeouts(read: ValueReader) -> tuple[float, float, float, int]:
    """Cycles and provider timeouts, and a reservation TTL long enough for them."""
    connect_timeout = read.number("CYCLES_CONNECT_TIMEOUT", "2", 0.01, 60)
    read_timeout = read.number("CYCLES_READ_TIMEOUT", "5", 0.01, 300)
    llm_timeout = read.number("LLM_TIMEOUT", "30", 0.1, 600)
    ttl_ms = read.integer(
        "CYCLES_RESERVATION_TTL_MS", "60000", 1_000, CYCLES_MAX_RESERVATION_TTL_MS
    )
    needed_ttl_ms = minimum_reservation_ttl_ms(llm_timeout, connect_timeout, read_timeout)
    involved = (
        "CYCLES_CONNECT_TIMEOUT",
        "CYCLES_READ_TIMEOUT",
        "LLM_TIMEOUT",
        "CYCLES_RESERVATION_TTL_MS",
    )
    if read.fine(*involved) and ttl_ms < needed_ttl_ms:
        read.note(
            "CYCLES_RESERVATION_TTL_MS",
            f"CYCLES_RESERVATION_TTL_MS={ttl_ms} is too short: a hold must outlive "
            f"LLM_TIMEOUT={llm_timeout:g}s plus two Cycles calls "
            f"(CYCLES_CONNECT_TIMEOUT={connect_timeout:g}s + "
            f"CYCLES_READ_TIMEOUT={read_timeout:g}s + {CYCLES_FIXED_PHASES_S:g}s each) "
            f"plus {CYCLES_SAFETY_MARGIN_MS} ms of margin: set it to at least "
            f"{needed_ttl_ms}, or lower those timeouts",
        )
    return connect_timeout, read_timeout, llm_timeout, ttl_ms


# --- runtime keys' lifetimes -------------------------------------------------------------------


class KeyLifetimeFields(TypedDict):
    cycles_key_ttl_days: int
    cycles_key_warn_days: int
    cycles_key_expires_at: Mapping[str, datetime]


def read_key_lifetimes(read: ValueReader) -> KeyLifetimeFields:
    """How long new runtime keys live, when to warn, and when the current ones end.

    The reference admin server ends a key 90 days after creation unless told otherwise;
    provisioning always tells it (CYCLES_KEY_TTL_DAYS). A warning window as long as the
    lifetime would make every new key due for rotation at once.
    """
    ttl_days = read.integer("CYCLES_KEY_TTL_DAYS", "90", 1, 3650)
    warn_days = read.integer("CYCLES_KEY_WARN_DAYS", "14", 0, 365)
    if read.fine("CYCLES_KEY_TTL_DAYS", "CYCLES_KEY_WARN_DAYS") and warn_days >= ttl_days:
        read.note(
            "CYCLES_KEY_WARN_DAYS",
            f"CYCLES_KEY_WARN_DAYS={warn_days} must be less than "
            f"CYCLES_KEY_TTL_DAYS={ttl_days}: every new key would be due for rotation",
        )
    recorded = read.pairs(
        "CYCLES_KEY_EXPIRES_AT", "date-time (ISO 8601, like 2027-03-02T10:00:00Z)", is_instant
    )
    return KeyLifetimeFields(
        cycles_key_ttl_days=ttl_days,
        cycles_key_warn_days=warn_days,
        cycles_key_expires_at={t: parse_instant(v) for t, v in recorded.items()},
    )


def is_instant(text: str) -> bool:
    try:
        parse_instant(text)
    except ValueError:
        return False
    return True


# --- observability ---------------------------------------------------------------------------


class ObservabilityFields(TypedDict):
    metrics_token: str | None
    api_docs: bool
    log_format: LogFormat
    prometheus_multiproc_dir: Path | None


def read_observability(read: ValueReader, production: bool) -> ObservabilityFields:
    """Metrics, the docs page (off by default in production) and request log lines (json
    lines by default in production, else text)."""
    default: LogFormat = "json" if production else "text"
    log_format = read.choice("LOG_FORMAT", default, LOG_FORMATS)
    multiproc_dir = read.raw("PROMETHEUS_MULTIPROC_DIR")
    return ObservabilityFields(
        metrics_token=read.raw("METRICS_TOKEN"),
        # The docs page shows no tenant data, but production exposes only what it must.
        api_docs=read.flag("API_DOCS", not production),
        log_format=log_format,
        prometheus_multiproc_dir=Path(multiproc_dir) if multiproc_dir else None,
    )


# --- what callers are told about their budget -----------------------------------------------

MAX_TOPUP_MESSAGE_CHARS = 500


class BudgetDisplayFields(TypedDict):
    budget_topup_message: str | None


def read_budget_display(read: ValueReader) -> BudgetDisplayFields:
    """``BUDGET_TOPUP_MESSAGE``: one line of text a 402 gives as ``how_to_get_more``."""
    message = read.raw("BUDGET_TOPUP_MESSAGE")  # unset or blank: the default
    if message is not None and (
        len(message) > MAX_TOPUP_MESSAGE_CHARS or not message.isprintable()
    ):
        read.note(
            "BUDGET_TOPUP_MESSAGE",
            f"BUDGET_TOPUP_MESSAGE must be one line of at most {MAX_TOPUP_MESSAGE_CHARS} "
            "printable characters (or unset, for the default)",
        )
        message = None
    return BudgetDisplayFields(budget_topup_message=message)
