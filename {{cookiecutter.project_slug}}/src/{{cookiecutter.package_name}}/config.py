"""Settings read from the environment and validated once, at start-up.

Every setting is an environment variable (see ``.env.example``). Every missing or invalid
value is collected, and start-up stops with one :class:`ConfigError` that lists them all,
one line each, naming each variable: a misconfigured deployment fails on boot, in one go,
instead of one variable per attempt or on its first request. Messages never quote a value
that may hold a secret (API keys, key lists, URLs that may carry credentials).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import click

from .llm import prices

AppEnv = Literal["development", "testing", "production"]
CyclesMode = Literal["enforce", "shadow"]
LogFormat = Literal["json", "text"]

# Chosen when the project was generated (how callers and tenants map is code: callers.py,
# cycles_tenancy.py); these are only defaults of settings.
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
# tenant-id rule (callers.py and cli.py use it).
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
# plus a fixed 5 s (cycles_transport.py holds every call to exactly this deadline, which
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
    # Runtime keys (key_expiry.py): the lifetime `flask cycles provision` gives a new key,
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
    llm_api_key: str | None = field(repr=False)
    llm_timeout: float
    max_prompt_chars: int
    default_max_tokens: int
    max_tokens_limit: int
    # Streams: how long one write may wait on a client that stopped reading before the
    # stream is ended and charged for what it produced (heartbeat.py)
    stream_write_timeout: float
    # Observability (metrics.py, request_log.py)
    metrics_token: str | None = field(repr=False)  # GET /metrics needs it as a bearer token
    log_format: LogFormat  # request log lines: json (production default) or text
    prometheus_multiproc_dir: Path | None  # set: metrics add up every worker's files there

    @property
    def uses_local_cycles(self) -> bool:
        return self.cycles_base_url == LOCAL_CYCLES

    @classmethod
    def from_env(cls, env: Mapping[str, str], instance_path: Path) -> Settings:
        """The settings in ``env``, or a :class:`ConfigError` listing every problem."""
        return _Reader(env, instance_path).settings()


T = TypeVar("T")


def _quoted(value: str) -> str:
    """A non-secret value as it appears in a message: quoted, on one line, not too long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def _number_text(value: float) -> str:
    """A parsed number as it appears in a message (a 4,000-digit one is cut short)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "..."


@dataclass(frozen=True)
class _Callers:
    key_hashes: dict[str, str]
    tenants: tuple[str, ...]
    valid: bool  # False: the list itself has problems; checks that depend on it are skipped


class _Reader:
    """Reads one variable at a time, noting every problem (named) instead of stopping.

    A reader that found a problem returns a valid fallback (the default) so reading goes
    on; checks that combine variables skip any variable already at fault, so every line
    of the final error is a real problem rather than a consequence of another one.
    """

    def __init__(self, env: Mapping[str, str], instance_path: Path) -> None:
        self.env = env
        self.instance_path = instance_path
        self.problems: list[str] = []
        self.at_fault: set[str] = set()

    def note(self, name: str, problem: str) -> None:
        self.problems.append(problem)
        self.at_fault.add(name)

    def fine(self, *names: str) -> bool:
        """True when none of ``names`` had a problem."""
        return not self.at_fault.intersection(names)

    def raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def parse(
        self, name: str, default: str, convert: Callable[[str], T], expected: str
    ) -> tuple[T, bool]:
        text = self.raw(name) or default
        try:
            return convert(text), True
        except (ValueError, TypeError, OverflowError):
            self.note(name, f"{name}={_quoted(text)} is invalid: expected {expected}")
            return convert(default), False

    def number(self, name: str, default: str, low: float, high: float) -> float:
        value, parsed = self.parse(name, default, float, "a number")
        if parsed and not low <= value <= high:  # also refuses nan
            shown = _number_text(value)
            self.note(name, f"{name}={shown} is out of range: expected {low:g}..{high:g}")
            return float(default)
        return value

    def integer(self, name: str, default: str, low: int, high: int) -> int:
        value, parsed = self.parse(name, default, int, "a whole number")
        if parsed and not low <= value <= high:
            shown = _number_text(value)
            self.note(name, f"{name}={shown} is out of range: expected {low}..{high}")
            return int(default)
        return value

    def flag(self, name: str, default: bool) -> bool:
        text = (self.raw(name) or str(default)).lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        self.note(name, f"{name}={_quoted(text)} is invalid: expected true or false")
        return default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in allowed:
            expected = " or ".join(filter(None, (", ".join(allowed[:-1]), allowed[-1])))
            self.note(name, f"{name}={_quoted(value)} is invalid: expected {expected}")
            return default
        return value

    def url(self, name: str) -> str | None:
        """An http(s) URL, never quoted back (it may carry credentials)."""
        value = self.raw(name)
        if value is not None and not URL_RE.fullmatch(value.rstrip("/")):
            self.note(name, f"{name} is not a valid URL: expected {URL_RULE}")
        return value.rstrip("/") if value else None

    def tenant_id(self, name: str, value: str) -> str:
        if not TENANT_ID_RE.fullmatch(value):
            self.note(
                name, f"{name}: tenant id {_quoted(value)} is invalid: expected {TENANT_ID_RULE}"
            )
        return value

    def pairs(
        self, name: str, what: str, value_ok: Callable[[str], object] = bool
    ) -> dict[str, str]:
        """Parse ``tenant=<what>,tenant=<what>`` into a dict.

        The values are secrets (or digests of them), and a malformed entry may be a bare
        key, so problems name an entry by its position and never quote any of it.
        """
        result: dict[str, str] = {}
        entries = [part.strip() for part in (self.raw(name) or "").split(",")]
        for position, item in enumerate(filter(None, entries), start=1):
            tenant, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not tenant or not value:
                problem = f"is not tenant={what}"
            elif not TENANT_ID_RE.fullmatch(tenant):
                problem = f"does not start with a valid tenant id ({TENANT_ID_RULE})"
            elif not value_ok(value):
                problem = f"does not end with a {what}"
            elif tenant in result:
                problem = "repeats the tenant of an earlier entry"
            else:
                result[tenant] = value
                continue
            self.note(name, f"{name}: entry {position} {problem} (value not shown)")
        return result

    def settings(self) -> Settings:
        app_env = self.choice("APP_ENV", "development", ("development", "testing", "production"))
        production = app_env == "production"
        base_url = self.cycles_base_url()
        local = base_url == LOCAL_CYCLES
        force_local = self.flag("CYCLES_LOCAL_FORCE", False)
        if production and local and not force_local:
            self.note(
                "CYCLES_BASE_URL",
                "CYCLES_BASE_URL is not set (or is local): production needs a real Cycles "
                "server (set CYCLES_LOCAL_FORCE=true to run the embedded development ledger "
                "anyway)",
            )
        dev_defaults = local and not production

        cycles_tenant = self.tenant_id(
            "CYCLES_TENANT", self.raw("CYCLES_TENANT") or DEV_OPERATOR_TENANT
        )
        cycles_api_key = self.raw("CYCLES_API_KEY")
        tenant_api_keys = self.pairs("CYCLES_TENANT_API_KEYS", "cycles-api-key")
        callers = self.callers(dev_defaults, tenant_api_keys)
        if not local:
            self.cycles_credentials(tenant_api_keys, callers)

        provider, llm_api_key = self.llm(production)
        llm_model = self.raw("LLM_MODEL") or prices.MODEL
        llm_prices = self.llm_prices(llm_model)
        default_max_tokens = self.integer("DEFAULT_MAX_TOKENS", "512", 1, 1_000_000)
        max_tokens_limit = self.integer("MAX_TOKENS_LIMIT", "4096", 1, 1_000_000)
        limits_fine = self.fine("DEFAULT_MAX_TOKENS", "MAX_TOKENS_LIMIT")
        if limits_fine and default_max_tokens > max_tokens_limit:
            self.note(
                "DEFAULT_MAX_TOKENS",
                f"DEFAULT_MAX_TOKENS={default_max_tokens} must not exceed "
                f"MAX_TOKENS_LIMIT={max_tokens_limit}",
            )
        budget_usd = self.raw("CYCLES_LOCAL_BUDGET_USD") or "5.00"
        if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,8})?", budget_usd):
            self.note(
                "CYCLES_LOCAL_BUDGET_USD",
                f"CYCLES_LOCAL_BUDGET_USD={_quoted(budget_usd)} is invalid: "
                "expected dollars like 5.00",
            )
            budget_usd = "5.00"

        cycles_app = self.raw("CYCLES_APP") or DEFAULT_CYCLES_APP
        if not SUBJECT_FIELD_RE.fullmatch(cycles_app):
            self.note(
                "CYCLES_APP",
                f"CYCLES_APP={_quoted(cycles_app)} is invalid: it is the Cycles subject field "
                f"'app': expected {SUBJECT_FIELD_RULE}",
            )
        mode = self.choice("CYCLES_MODE", "enforce", ("enforce", "shadow"))
        connect_timeout, read_timeout, llm_timeout, ttl_ms = self.timeouts()
        cycles_fail_open = self.flag("CYCLES_FAIL_OPEN", False)
        deny_cache_ms = self.integer("CYCLES_DENY_CACHE_MS", "1000", 0, 60_000)
        admin_url = self.url("CYCLES_ADMIN_URL")
        key_ttl_days, key_warn_days, key_expires_at = self.key_lifetimes()
        local_port = self.integer("CYCLES_LOCAL_PORT", "0", 0, 65_535)
        max_prompt_chars = self.integer("MAX_PROMPT_CHARS", "20000", 1, 10_000_000)
        stream_write_timeout = self.number("STREAM_WRITE_TIMEOUT", "30", 0.1, 3600)
        replay_days = self.number("CYCLES_LOCAL_REPLAY_DAYS", "7", 0.001, 3650)
        log_format = self.choice("LOG_FORMAT", "json" if production else "text", ("json", "text"))
        multiproc_dir = self.raw("PROMETHEUS_MULTIPROC_DIR")
        if self.problems:
            raise ConfigError(self.problems)

        instance = self.instance_path
        return Settings(
            app_env=app_env,  # type: ignore[arg-type]  # checked against the Literal above
            instance_path=instance,
            cycles_base_url=base_url,
            cycles_api_key=cycles_api_key,
            cycles_tenant=cycles_tenant,
            cycles_tenant_api_keys=tenant_api_keys,
            cycles_app=cycles_app,
            cycles_connect_timeout=connect_timeout,
            cycles_read_timeout=read_timeout,
            cycles_fail_open=cycles_fail_open,
            cycles_mode=mode,  # type: ignore[arg-type]  # checked against the Literal above
            cycles_reservation_ttl_ms=ttl_ms,
            cycles_deny_cache_ms=deny_cache_ms,
            cycles_journal_dir=Path(
                self.raw("CYCLES_JOURNAL_DIR") or instance / "cycles-commit-journal"
            ),
            cycles_admin_url=admin_url,
            cycles_admin_api_key=self.raw("CYCLES_ADMIN_API_KEY"),
            cycles_key_ttl_days=key_ttl_days,
            cycles_key_warn_days=key_warn_days,
            cycles_key_expires_at=key_expires_at,
            cycles_local_db=Path(self.raw("CYCLES_LOCAL_DB") or instance / "cycles-ledger.sqlite3"),
            cycles_local_port=local_port,
            cycles_local_force=force_local,
            cycles_local_budget_usd=budget_usd,
            cycles_local_replay_days=replay_days,
            tenant_key_hashes=callers.key_hashes,
            tenants=callers.tenants,
            llm_provider=provider,
            llm_model=llm_model,
            llm_prices=llm_prices,
            llm_api_key=llm_api_key,
            llm_timeout=llm_timeout,
            max_prompt_chars=max_prompt_chars,
            default_max_tokens=default_max_tokens,
            max_tokens_limit=max_tokens_limit,
            stream_write_timeout=stream_write_timeout,
            metrics_token=self.raw("METRICS_TOKEN"),
            log_format=log_format,  # type: ignore[arg-type]  # checked against the Literal above
            prometheus_multiproc_dir=Path(multiproc_dir) if multiproc_dir else None,
        )

    def cycles_base_url(self) -> str:
        """``local`` (the embedded ledger) or a server URL; a bad URL still means a server."""
        value = self.raw("CYCLES_BASE_URL")
        if value is None or value == LOCAL_CYCLES:
            return LOCAL_CYCLES
        if not URL_RE.fullmatch(value.rstrip("/")):
            problem = f"is not a valid URL: expected {URL_RULE}, or local"
            self.note("CYCLES_BASE_URL", f"CYCLES_BASE_URL {problem}")
        return value.rstrip("/")

    def timeouts(self) -> tuple[float, float, float, int]:
        """Cycles and provider timeouts, and a reservation TTL long enough for them."""
        connect_timeout = self.number("CYCLES_CONNECT_TIMEOUT", "2", 0.01, 60)
        read_timeout = self.number("CYCLES_READ_TIMEOUT", "5", 0.01, 300)
        llm_timeout = self.number("LLM_TIMEOUT", "30", 0.1, 600)
        ttl_ms = self.integer(
            "CYCLES_RESERVATION_TTL_MS", "60000", 1_000, CYCLES_MAX_RESERVATION_TTL_MS
        )
        needed_ttl_ms = minimum_reservation_ttl_ms(llm_timeout, connect_timeout, read_timeout)
        involved = (
            "CYCLES_CONNECT_TIMEOUT",
            "CYCLES_READ_TIMEOUT",
            "LLM_TIMEOUT",
            "CYCLES_RESERVATION_TTL_MS",
        )
        if self.fine(*involved) and ttl_ms < needed_ttl_ms:
            self.note(
                "CYCLES_RESERVATION_TTL_MS",
                f"CYCLES_RESERVATION_TTL_MS={ttl_ms} is too short: a hold must outlive "
                f"LLM_TIMEOUT={llm_timeout:g}s plus two Cycles calls "
                f"(CYCLES_CONNECT_TIMEOUT={connect_timeout:g}s + "
                f"CYCLES_READ_TIMEOUT={read_timeout:g}s + {CYCLES_FIXED_PHASES_S:g}s each) "
                f"plus {CYCLES_SAFETY_MARGIN_MS} ms of margin: set it to at least "
                f"{needed_ttl_ms}, or lower those timeouts",
            )
        return connect_timeout, read_timeout, llm_timeout, ttl_ms

    def key_lifetimes(self) -> tuple[int, int, dict[str, datetime]]:
        """How long new runtime keys live, when to warn, and when the current ones end.

        The reference admin server ends a key 90 days after creation unless told otherwise;
        provisioning always tells it (CYCLES_KEY_TTL_DAYS). A warning window as long as the
        lifetime would make every new key due for rotation at once.
        """
        ttl_days = self.integer("CYCLES_KEY_TTL_DAYS", "90", 1, 3650)
        warn_days = self.integer("CYCLES_KEY_WARN_DAYS", "14", 0, 365)
        if self.fine("CYCLES_KEY_TTL_DAYS", "CYCLES_KEY_WARN_DAYS") and warn_days >= ttl_days:
            self.note(
                "CYCLES_KEY_WARN_DAYS",
                f"CYCLES_KEY_WARN_DAYS={warn_days} must be less than "
                f"CYCLES_KEY_TTL_DAYS={ttl_days}: every new key would be due for rotation",
            )

        def instant(text: str) -> bool:
            try:
                parse_instant(text)
            except ValueError:
                return False
            return True

        recorded = self.pairs(
            "CYCLES_KEY_EXPIRES_AT", "date-time (ISO 8601, like 2027-03-02T10:00:00Z)", instant
        )
        return ttl_days, warn_days, {t: parse_instant(v) for t, v in recorded.items()}

    def llm(self, production: bool) -> tuple[str, str | None]:
        """The provider to use and its API key (never quoted: only the variable's name).

        Production calls the provider chosen at generation unless LLM_PROVIDER names
        another; development and tests use the offline fake unless LLM_PROVIDER names a
        provider, so a key exported in the shell never makes them spend money, and a
        provider chosen without its key is refused rather than quietly replaced.
        """
        default = DEFAULT_LLM_PROVIDER if production else "fake"
        provider = self.choice("LLM_PROVIDER", default, LLM_PROVIDERS)
        if provider == "fake":
            return provider, None
        key_name = f"{provider.upper()}_API_KEY"
        api_key = self.raw(key_name)
        if api_key is None:
            hint = "" if production else " (unset LLM_PROVIDER to use the offline fake)"
            self.note(key_name, f"{key_name} is required for LLM_PROVIDER={provider}{hint}")
            return "fake", None
        return provider, api_key

    def llm_prices(self, model: str) -> prices.ModelPrices:
        """What ``model`` costs: its listed prices, each replaced by its setting when set."""
        explicit: dict[str, int] = {}
        for kind, name in prices.PRICE_SETTINGS.items():
            text = self.raw(name)
            if text is None:
                continue
            try:
                explicit[kind] = prices.usd_per_million(text)
            except ValueError as reason:
                self.note(name, f"{name}={_quoted(text)} is invalid: {reason}")
        if not self.fine(*prices.PRICE_SETTINGS.values()):
            return prices.GENERATED
        try:
            return prices.priced(model, explicit)
        except prices.PriceProblem as problem:
            self.note(problem.setting, str(problem))
            return prices.GENERATED
{%- if cookiecutter.tenant_isolation == "workspace" %}

    def cycles_credentials(self, tenant_api_keys: Mapping[str, str], callers: _Callers) -> None:
        """A Cycles server needs the app's Cycles tenant and its runtime key."""
        for name in ("CYCLES_API_KEY", "CYCLES_TENANT"):
            if not self.raw(name):
                self.note(name, f"{name} is required when CYCLES_BASE_URL is a server")
{%- else %}

    def cycles_credentials(self, tenant_api_keys: Mapping[str, str], callers: _Callers) -> None:
        """A Cycles server needs one runtime key per tenant, each of that Cycles tenant."""
        name = "CYCLES_TENANT_API_KEYS"
        if not tenant_api_keys:
            if self.fine(name):
                self.note(
                    name,
                    f"{name} is required when CYCLES_BASE_URL is a server: "
                    "one tenant=cycles-api-key pair per tenant",
                )
            return
        missing = sorted(set(callers.tenants) - set(tenant_api_keys))
        if callers.valid and self.fine(name) and missing:
            self.note(name, f"{name} has no Cycles API key for tenant(s) {missing}")
{%- endif %}
{%- if cookiecutter.tenant_auth == "api_key" %}

    def callers(self, dev_defaults: bool, tenant_api_keys: Mapping[str, str]) -> _Callers:
        """Who may call the app: key digests (sha256 of each caller's key) per tenant."""
        name = "TENANT_API_KEYS"
        by_tenant = self.pairs(name, "sha256-of-key", SHA256_HEX_RE.fullmatch)
        if not by_tenant and self.fine(name) and dev_defaults:
            by_tenant = {t: hash_api_key(dev_caller_key(t)) for t in DEV_TENANTS}
        if not by_tenant and self.fine(name):
            self.note(
                name,
                f"{name} is required: tenant=sha256-of-key pairs "
                "(create them with `flask tenants new-key TENANT`)",
            )
        hashes = {digest: tenant for tenant, digest in by_tenant.items()}
        if len(hashes) != len(by_tenant):
            self.note(name, f"{name}: two tenants share one key")
        return _Callers(hashes, tuple(by_tenant), valid=self.fine(name))
{%- else %}

    def callers(self, dev_defaults: bool, tenant_api_keys: Mapping[str, str]) -> _Callers:
        """Who may call the app: the tenant ids the gateway may send in X-Tenant-ID."""
        name = "TENANTS"
        names = [t.strip() for t in (self.raw(name) or "").split(",") if t.strip()]
{%- if cookiecutter.tenant_isolation == "tenant" %}
        if not names:
            if not self.fine("CYCLES_TENANT_API_KEYS"):
                return _Callers({}, (), valid=False)  # the tenants are not known yet
            names = list(tenant_api_keys)  # one Cycles key per tenant names them all
{%- endif %}
        if not names and dev_defaults:
            names = list(DEV_TENANTS)
        if not names:
            self.note(name, f"{name} is required: the comma-separated tenant ids the app serves")
        tenants = tuple(dict.fromkeys(self.tenant_id(name, t) for t in names))
        return _Callers({}, tenants, valid=self.fine(name))
{%- endif %}
