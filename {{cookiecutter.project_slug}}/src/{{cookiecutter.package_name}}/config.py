"""Settings read from the environment and validated once, at start-up: what they are.

Every setting is an environment variable (see ``.env.example``). Every missing or invalid
value is collected, and start-up stops with one :class:`ConfigError` that lists them all,
one line each, naming each variable: a misconfigured deployment fails on boot, in one go,
instead of one variable per attempt or on its first request. Messages never quote a value
that may hold a secret (API keys, key lists, URLs that may carry credentials).

Here: :class:`Settings`, :class:`ConfigError` and the rules settings follow.
``config_reader.read_settings`` reads them, section by section.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click
from flask import Flask, current_app

from .llm import prices

AppEnv = Literal["development", "testing", "production"]
CyclesMode = Literal["enforce", "shadow"]
LogFormat = Literal["json", "text"]
# Each Literal's values, in the order an error message lists them.
APP_ENVS: tuple[AppEnv, ...] = ("development", "testing", "production")
CYCLES_MODES: tuple[CyclesMode, ...] = ("enforce", "shadow")
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
# How often a plan's budget resets (budget/periods.py has the UTC boundaries); none: never.
Period = Literal["day", "week", "month", "none"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "none")

# Chosen when the project was generated (how callers and tenants map is code: callers.py,
# config_callers.py, cycles/tenancy.py, config_tenancy.py); these are only defaults of settings.
DEFAULT_LLM_PROVIDER = "{{ cookiecutter.llm_provider }}"
DEFAULT_CYCLES_APP = "{{ cookiecutter.cycles_app }}"
# The offline fake is always available beside the provider chosen at generation, which is
# the default in production only (development and tests use the fake unless told).
LLM_PROVIDERS = tuple(dict.fromkeys(("fake", DEFAULT_LLM_PROVIDER)))

# Tenant ids end up in Cycles scopes (lower-cased there), URLs and logs: keep them plain,
# and lowercase only so that "Acme" and "acme" can never share one budget. The reference
# admin server takes a tenant id of 3-64 of [a-z0-9-] (TenantCreateRequest) and a scope id
# that starts and ends with a letter or digit (ScopeValidator): an id that meets both works
# as a Cycles tenant and as a workspace, in both isolation modes. This is the app's only
# tenant-id rule (the callers' settings and checks, and the commands use it).
TENANT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}[a-z0-9]")
TENANT_ID_RULE = "3-64 lowercase letters, digits or '-', starting and ending with a letter or digit"
# A Cycles subject field (CYCLES_APP): the protocol allows [a-zA-Z0-9_.-], at most 128
# characters, because ':' and '/' delimit scope paths ("x/workflow:y" would forge a deeper
# scope). Lowercase only, as for tenants: Cycles lower-cases scope values.
SUBJECT_FIELD_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
SUBJECT_FIELD_RULE = (
    "1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
)
LOCAL_CYCLES = "local"
# TENANT_API_KEYS holds digests of callers' keys, never the keys themselves.
SHA256_HEX_RE = re.compile(r"[0-9a-f]{64}")
# http(s)://host[:port][/path]. No user:password@, query or fragment: credentials belong
# in the key variables, and a URL is therefore never quoted back in an error message.
URL_RE = re.compile(r"https?://(\[[0-9a-fA-F:.]+\]|[\w.-]+)(:\d{1,5})?(/[^\s?#@]*)?", re.ASCII)
URL_RULE = "http(s)://host[:port][/path] without user:password@, query or fragment"

# One whole Cycles call (create, extend, commit) ends within the connect and read timeouts
# plus a fixed 5 s (cycles/transport.py holds every call to exactly this deadline, which
# runcycles' per-read timeouts alone do not); runcycles keeps at least 1 s of margin
# before a hold's expiry when it plans an extension. A hold must outlive the reserve call,
# the longest provider call and the commit call with that margin to spare.
CYCLES_FIXED_PHASES_S = 5.0
# The reference Cycles server cuts a longer requested TTL to its max_reservation_ttl_ms
# (one hour by default) without saying so: a longer setting would only look safe.
CYCLES_MAX_RESERVATION_TTL_MS = 3_600_000
CYCLES_SAFETY_MARGIN_MS = 1_000


def cycles_call_budget_ms(connect_timeout_s: float, read_timeout_s: float) -> int:
    """The longest one Cycles call can take through runcycles, in milliseconds."""
    return math.ceil((connect_timeout_s + read_timeout_s + CYCLES_FIXED_PHASES_S) * 1000)


def minimum_reservation_ttl_ms(
    llm_timeout_s: float, connect_timeout_s: float, read_timeout_s: float
) -> int:
    """The shortest reservation TTL under which no hold can lapse during a live call."""
    call_ms = cycles_call_budget_ms(connect_timeout_s, read_timeout_s)
    return math.ceil(llm_timeout_s * 1000) + 2 * call_ms + CYCLES_SAFETY_MARGIN_MS


# Development defaults: used only with the embedded ledger outside production.
DEV_TENANTS = ("acme", "globex")
DEV_OPERATOR_TENANT = "operator"


def dev_caller_key(tenant: str) -> str:
    """The development API key a caller presents for ``tenant`` (never used in production)."""
    return f"dev-key-{tenant}"


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time with its UTC offset (``2027-03-02T10:00:00Z``), in UTC."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return value.astimezone(UTC)


def hash_api_key(key: str) -> str:
    """Callers' API keys are stored only as SHA-256 hex digests."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """A budget plan (BUDGET_PLANS): an allocation in USD microcents for each period."""

    name: str
    allocated: int
    period: Period
    # Each end user's budget under a tenant on this plan (``/user=USD``), in USD microcents;
    # None: END_USER_BUDGET_USD's (budget/end_users.py).
    per_user: int | None = None


class ConfigError(click.ClickException, ValueError):
    """Settings are missing or invalid: ``problems`` holds one line per problem.

    A :class:`click.ClickException`, so ``flask run`` and every ``flask ...`` command print
    the problems without a traceback and exit 1; gunicorn's master checks the same settings
    before any worker starts (``gunicorn.conf.py``).
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        found = [problems] if isinstance(problems, str) else list(problems)
        self.problems: tuple[str, ...] = tuple(dict.fromkeys(found))
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  {problem}" for problem in self.problems)
            message = f"{len(self.problems)} configuration problems:\n{lines}"
        super().__init__(message)


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
    cycles_mode: CyclesMode  # enforce: deny with 402; shadow: dry-run, log, serve anyway
    cycles_reservation_ttl_ms: int
    cycles_deny_cache_ms: int  # how long a budget denial is answered without Cycles; 0: off
    cycles_journal_dir: Path
    cycles_admin_url: str | None
    cycles_admin_api_key: str | None = field(repr=False)
    # Runtime keys (cycles/key_expiry.py): the lifetime `flask cycles provision` gives a new key,
    # how many days before its end to warn and rotate, and when each Cycles tenant's key
    # ends (recorded by provision beside the keys).
    cycles_key_ttl_days: int
    cycles_key_warn_days: int
    cycles_key_expires_at: Mapping[str, datetime]
    # Embedded ledger (development and tests only)
    cycles_local_db: Path
    cycles_local_port: int
    cycles_local_force: bool
    cycles_local_budget_usd: str
    cycles_local_replay_days: float  # how long the ledger replays a retried call's answer
    # Callers
    tenant_key_hashes: Mapping[str, str]  # api_key auth: sha256(key) -> tenant
    tenants: tuple[str, ...]  # every tenant the app serves
    # LLM
    llm_provider: str
    llm_model: str
    llm_prices: prices.ModelPrices  # the running model's (llm/prices.py)
    # Every model a request may name (config_models.py), llm_model first, with its prices
    llm_models: Mapping[str, prices.ModelPrices]
    # A new end user's budget in USD microcents (config_end_users.py); None: no end users
    end_user_allocation: int | None
    llm_api_key: str | None = field(repr=False)
    llm_timeout: float
    max_prompt_chars: int
    default_max_tokens: int
    max_tokens_limit: int
    # Fit-to-budget (budget/fit.py): a call whose worst case does not fit is served with a
    # lower max_tokens when what remains buys at least this many output tokens; 0: off
    fit_min_tokens: int
    # Streams: how long one write may wait on a client that stopped reading before the
    # stream is ended and charged for what it produced (budget/hold_keeper.py)
    stream_write_timeout: float
    # Observability (observability/metrics.py, observability/request_log.py)
    metrics_token: str | None = field(repr=False)  # GET /metrics needs it as a bearer token
    api_docs: bool  # GET /docs, the API document as a page (web/docs.py)
    log_format: LogFormat  # request log lines: json (production default) or text
    prometheus_multiproc_dir: Path | None  # set: metrics add up every worker's files there
    # What a 402 tells a tenant about getting more budget (None: the default naming the
    # operator's command; budget/denials.py)
    budget_topup_message: str | None

    # Budget plans (config_plans.py): plan name -> plan, and each app tenant's plan name
    # (TENANT_PLANS or DEFAULT_PLAN); a tenant with no plan keeps the budget it was given.
    budget_plans: Mapping[str, Plan]
    tenant_plans: Mapping[str, str]
    budget_rollover_state: Path  # where rollovers record the period each budget reset for
    cycles_local_rollover: bool  # the app rolls the embedded ledger's budgets over itself

    # Budget alerts (config_alerts.py): thresholds, and the receiver of Cycles' events
    budget_alert_thresholds: tuple[float, ...]
    cycles_webhook_url: str | None  # the app's receiver as Cycles reaches it (provisioning)
    cycles_webhook_secret: str | None = field(repr=False)  # verifies Cycles' events
    # internal networks tenants' alert URLs may point at (alerts/destinations.py)
    budget_webhook_allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    budget_alerts_resume: bool  # an app's start resumes forwards left queued (not in tests)
    # derives tenants' alert secrets, so the alerts file stores none (alerts/tenant_secrets.py)
    budget_alert_signing_key: str | None = field(repr=False)

    @property
    def uses_local_cycles(self) -> bool:
        return self.cycles_base_url == LOCAL_CYCLES

    def prices_of(self, model: str | None) -> prices.ModelPrices:
        """What ``model`` (one of ``llm_models``; None: ``llm_model``) costs."""
        return self.llm_prices if model is None else self.llm_models[model]

    def plan_for(self, tenant: str) -> Plan | None:
        """The plan of app tenant ``tenant``, or None when it has none."""
        name = self.tenant_plans.get(tenant)
        return self.budget_plans[name] if name is not None else None


SETTINGS_EXTENSION = "settings"


def app_settings(app: Flask | None = None) -> Settings:
    """The app's validated settings (``app`` defaults to the current app)."""
    settings: Settings = (app if app is not None else current_app).extensions[SETTINGS_EXTENSION]
    return settings
