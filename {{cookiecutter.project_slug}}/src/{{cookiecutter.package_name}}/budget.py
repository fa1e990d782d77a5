"""The Cycles extension: clients, the preflight check, balances and error mapping.

Everything lives on the app (``app.extensions["cycles"]``), never on the module, so two
apps in one process each talk to their own Cycles server with their own keys.
{%- if cookiecutter.tenant_isolation == "workspace" %}

Isolation: **workspace**. The app is one Cycles tenant (``CYCLES_TENANT``) with one API key;
app tenant ``acme`` spends from ``tenant:<CYCLES_TENANT>/workspace:acme``.
{%- else %}

Isolation: **tenant**. Every app tenant is its own Cycles tenant with its own API key
(``CYCLES_TENANT_API_KEYS``), so one tenant's key cannot touch another's budget.
{%- endif %}
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, Response
from runcycles import (
    Action,
    Amount,
    CyclesClient,
    CyclesConfig,
    CyclesError,
    CyclesProtocolError,
    CyclesResponse,
    Decision,
    DecisionRequest,
    Subject,
    Unit,
)

from . import devledger
from .config import Settings
from .denycache import DenyCache
from .errors import ApiError, error_response

log = logging.getLogger(__name__)

EXTENSION = "cycles"
# `flask cycles ...` finds the embedded ledger here (see cli.py).
LOCAL_SERVER_EXTENSION = "cycles_local_server"
ACTION_KIND = "llm.completion"

# Cycles denial codes -> (HTTP status, the app's stable error code, message).
_DENIALS: Mapping[str, tuple[int, str, str]] = {
    "BUDGET_EXCEEDED": (402, "budget_exceeded", "The budget cannot cover this request."),
    "DEBT_OUTSTANDING": (
        402,
        "debt_outstanding",
        "The budget has outstanding debt; it must be repaid before new requests.",
    ),
    "OVERDRAFT_LIMIT_EXCEEDED": (
        402,
        "overdraft_limit_exceeded",
        "The budget is over its overdraft limit.",
    ),
    "TENANT_CLOSED": (403, "tenant_closed", "The tenant's budget account is closed."),
    "BUDGET_NOT_FOUND": (503, "budget_not_configured", "No budget is set up for this tenant."),
    "NOT_FOUND": (503, "budget_not_configured", "No budget is set up for this tenant."),
}
_DENIED = (402, "budget_denied", "The budget service denied this request.")
_UNAVAILABLE = (503, "cycles_unavailable", "The budget service is unavailable; try again later.")
_REJECTED_KEY = (503, "cycles_misconfigured", "The budget service is misconfigured.")
_RATE_LIMITED = (429, "rate_limited", "Too many requests to the budget service; slow down.")
_REFUSED = (503, "cycles_error", "The budget service refused the request.")


@dataclass(frozen=True)
class Balance:
    """One budget scope as the caller sees it, in USD microcents."""

    scope: str
    allocated: int
    spent: int
    reserved: int
    remaining: int
    debt: int


class CyclesBudgets:
    """The app's Cycles clients and how app tenants map to Cycles subjects."""

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        api_keys: Mapping[str, str],
        *,
        embedded: bool,
    ) -> None:
        """``api_keys``: the Cycles API key used for each app tenant."""
        self.settings = settings
        self.fail_open = settings.cycles_fail_open
        self._base_url = base_url
        self._api_keys = dict(api_keys)
        # Tests and the embedded ledger must not hold process exit for pending commits:
        # they stay in the journal and replay on the next start.
        self._flush_timeout = 0.0 if settings.app_env == "testing" or embedded else 10.0
        # One client per distinct key, made on first use (each costs a TLS context): a
        # CyclesClient is thread-safe, and a Cycles key belongs to one Cycles tenant.
        self._clients: dict[str, CyclesClient] = {}
        self._lock = threading.Lock()
        # Recent denials per app tenant: a tenant out of budget is answered from here.
        self.deny_cache = DenyCache(settings.cycles_deny_cache_ms)

    def client_for(self, tenant: str) -> CyclesClient:
        key = self._api_keys[tenant]
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = CyclesClient(
                    CyclesConfig(
                        base_url=self._base_url,
                        api_key=key,
                        connect_timeout=self.settings.cycles_connect_timeout,
                        read_timeout=self.settings.cycles_read_timeout,
                        retry_flush_timeout=self._flush_timeout,
                        journal_dir=str(self.settings.cycles_journal_dir),
                    )
                )
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
{%- if cookiecutter.tenant_isolation == "workspace" %}

    def subject_for(self, tenant: str) -> Subject:
        """App tenant ``acme`` is workspace ``acme`` of the app's one Cycles tenant."""
        return Subject(
            tenant=self.settings.cycles_tenant, workspace=tenant, app=self.settings.cycles_app
        )

    def _balance_filters(self, tenant: str) -> dict[str, str]:
        return {"tenant": self.settings.cycles_tenant, "workspace": tenant}
{%- else %}

    def subject_for(self, tenant: str) -> Subject:
        """App tenant ``acme`` is Cycles tenant ``acme``."""
        return Subject(tenant=tenant, app=self.settings.cycles_app)

    def _balance_filters(self, tenant: str) -> dict[str, str]:
        return {"tenant": tenant}
{%- endif %}

    def action(self) -> Action:
        return Action(kind=ACTION_KIND, name=self.settings.llm_model[:256])

    def preflight(self, tenant: str, estimate: int) -> None:
        """Ask Cycles whether ``tenant`` may spend ``estimate`` now; raise ApiError if not.

        A cheap check before any work (parsing the model's answer, holding budget). The
        reservation that follows is what actually guards the spend. A recent denial of
        ``tenant`` is answered from the deny cache without asking Cycles (see denycache.py).
        """
        cached = self.deny_cache.lookup(tenant, estimate)
        if cached is not None:
            raise cached
        try:
            denial = self._decide(tenant, estimate)
        except BaseException:  # no answer: nothing to keep, and let the next request ask
            self.deny_cache.forget(tenant)
            raise
        if denial is None:  # allowed: only denials are kept
            self.deny_cache.forget(tenant)
            return
        raise self.deny_cache.remember(tenant, estimate, denial)

    def _decide(self, tenant: str, estimate: int) -> ApiError | None:
        """Cycles' ``decide``: the denial to answer with, or None when allowed."""
        request = DecisionRequest(
            idempotency_key=str(uuid.uuid4()),
            subject=self.subject_for(tenant),
            action=self.action(),
            estimate=Amount(unit=Unit.USD_MICROCENTS, amount=estimate),
        )
        response = self.client_for(tenant).decide(request)
        body = response.body if isinstance(response.body, dict) else {}
        if not response.is_success or "decision" not in body:
            error = api_error_from_response(response, "decide")
            if self.fail_open and error.error == "cycles_unavailable":
                log.warning("Cycles is unavailable; CYCLES_FAIL_OPEN lets the request through")
                return None
            raise error
        if body.get("decision") == Decision.DENY.value:
            code = body.get("reason_code")
            denial = _DENIALS.get(code if isinstance(code, str) else "", _DENIED)
            return _api_error(denial, _non_negative_int(body.get("retry_after_ms")))
        return None

    def balances(self, tenant: str) -> list[Balance]:
        """``tenant``'s own budgets, one per scope."""
        response = self.client_for(tenant).get_balances(**self._balance_filters(tenant))
        if not response.is_success:
            raise api_error_from_response(response, "balances")
        # Read leniently: a newer server may add fields the client's strict models reject.
        body = response.body if isinstance(response.body, dict) else {}
        rows = body.get("balances")
        return [
            Balance(
                scope=str(row.get("scope_path") or row.get("scope")),
                allocated=_amount(row, "allocated"),
                spent=_amount(row, "spent"),
                reserved=_amount(row, "reserved"),
                remaining=_amount(row, "remaining"),
                debt=_amount(row, "debt"),
            )
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict)
        ]


def _amount(row: Mapping[str, object], name: str) -> int:
    value = row.get(name)
    amount = value.get("amount") if isinstance(value, dict) else None
    return amount if isinstance(amount, int) else 0


def _non_negative_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def get_budgets(app: Flask) -> CyclesBudgets:
    budgets: CyclesBudgets = app.extensions[EXTENSION]
    return budgets


def init_app(app: Flask) -> None:
    """Connect ``app`` to Cycles (starting the embedded ledger when configured)."""
    settings: Settings = app.extensions["settings"]
    if settings.uses_local_cycles:
        embedded = devledger.start(settings)
        app.extensions[LOCAL_SERVER_EXTENSION] = embedded
        base_url = embedded.base_url
        api_keys = {tenant: embedded.api_key_for(tenant) for tenant in settings.tenants}
        if settings.app_env != "testing":
            atexit.register(close, app)
    else:
        base_url = settings.cycles_base_url
        api_keys = configured_api_keys(settings)
    app.extensions[EXTENSION] = CyclesBudgets(
        settings, base_url, api_keys, embedded=settings.uses_local_cycles
    )
    app.register_error_handler(CyclesError, _handle_cycles_error)


def configured_api_keys(settings: Settings) -> dict[str, str]:
    """The Cycles API key of each app tenant, from the settings (config checked them)."""
{%- if cookiecutter.tenant_isolation == "workspace" %}
    return dict.fromkeys(settings.tenants, settings.cycles_api_key or "")
{%- else %}
    return {tenant: settings.cycles_tenant_api_keys[tenant] for tenant in settings.tenants}
{%- endif %}


def close(app: Flask) -> None:
    """Close the app's Cycles clients and stop its embedded ledger (idempotent)."""
    budgets = app.extensions.pop(EXTENSION, None)
    if budgets is not None:
        budgets.close()
    embedded = app.extensions.pop(LOCAL_SERVER_EXTENSION, None)
    if embedded is not None:
        embedded.stop()


# --- errors ------------------------------------------------------------------------------


def is_unavailable(status: int) -> bool:
    """No answer (transport failure, timeout: status <= 0) or a server-side failure."""
    return status <= 0 or status >= 500


def classify(status: int, code: str | None, retry_after_ms: int | None) -> ApiError:
    """The app's answer to a Cycles failure: never the upstream detail or the key."""
    denial = _DENIALS.get(code or "")
    if denial is not None:
        return _api_error(denial, retry_after_ms)
    if status == 429 or code == "LIMIT_EXCEEDED":
        return _api_error(_RATE_LIMITED, retry_after_ms)
    if is_unavailable(status):
        return _api_error(_UNAVAILABLE, retry_after_ms)
    if status in (401, 403):
        # Cycles rejected the app's own key: an operator problem, not the caller's.
        return _api_error(_REJECTED_KEY)
    return _api_error(_REFUSED)


def api_error_from_response(response: CyclesResponse, operation: str) -> ApiError:
    body = response.body if isinstance(response.body, dict) else {}
    code = body.get("error")
    retry_after = _non_negative_int(body.get("retry_after_ms"))
    if retry_after is None:
        retry_after = response.retry_after_ms_header
    if response.is_success:
        # A 2xx without what the protocol promises is as good as no answer.
        error = classify(-1, None, None)
    else:
        error = classify(response.status, code if isinstance(code, str) else None, retry_after)
    _log_failure(operation, response.status, code, error)
    return error


def _handle_cycles_error(exc: CyclesError) -> Response:
    if isinstance(exc, CyclesProtocolError):
        status, code, retry = exc.status, exc.error_code, exc.retry_after_ms
    else:
        status, code, retry = -1, None, None
    error = classify(status, code, retry)
    _log_failure("reserve", status, code, error)
    return error_response(error.status, error.error, error.message, error.retry_after_ms)


def _log_failure(operation: str, status: int, code: str | None, error: ApiError) -> None:
    level = logging.WARNING if error.status >= 500 else logging.INFO
    log.log(level, "Cycles %s failed: HTTP %s %s -> %s", operation, status, code, error.error)


def _api_error(kind: tuple[int, str, str], retry_after_ms: int | None = None) -> ApiError:
    status, code, message = kind
    return ApiError(status, code, message, retry_after_ms)
