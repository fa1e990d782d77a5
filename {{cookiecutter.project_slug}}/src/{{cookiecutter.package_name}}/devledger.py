"""The embedded development ledger: started when ``CYCLES_BASE_URL=local``.

It is a real Cycles-protocol server on 127.0.0.1 over a SQLite file in the instance folder,
so development runs the same client code as production. It is seeded on start with the
Cycles tenants, API keys and budgets the app's tenants need; budgets that already exist
are left alone, so a restart never refills a spent budget.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from decimal import Decimal

from .config import ConfigError, Settings
from .localcycles import CyclesError, LocalCyclesServer, LocalLedger
from .pricing import MICROCENTS_PER_USD

log = logging.getLogger(__name__)

UNIT = "USD_MICROCENTS"


class EmbeddedCycles:
    """A running embedded ledger and the runtime API key of each app tenant."""

    def __init__(self, server: LocalCyclesServer, api_keys: Mapping[str, str]) -> None:
        self.server = server
        self._api_keys = dict(api_keys)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def admin_key(self) -> str | None:
        return self.server.admin_key

    @property
    def ledger(self) -> LocalLedger:
        return self.server.ledger

    def api_key_for(self, tenant: str) -> str:
        """The Cycles API key the app uses for ``tenant``'s budget."""
        return self._api_keys[tenant]

    def stop(self) -> None:
        self.server.stop()
        self.server.ledger.close()


def local_api_key(cycles_tenant: str) -> str:
    """A stable key for a Cycles tenant of the embedded ledger (development only).

    Stable across restarts, so the ledger file and the app agree without storing keys.
    """
    return f"cyc_local_{cycles_tenant}"


def budget_microcents(settings: Settings) -> int:
    # CYCLES_LOCAL_BUDGET_USD has at most 8 decimals (validated), so this is exact.
    return int(Decimal(settings.cycles_local_budget_usd) * MICROCENTS_PER_USD)


def start(settings: Settings) -> EmbeddedCycles:
    """Start the embedded ledger on ``settings.cycles_local_db`` and seed it."""
    settings.cycles_local_db.parent.mkdir(parents=True, exist_ok=True)
    # The admin API serves `flask cycles ...` in this process only: a fresh key each start.
    server = LocalCyclesServer(
        str(settings.cycles_local_db),
        port=settings.cycles_local_port,
        admin_key=secrets.token_urlsafe(24),
    )
    try:
        server.start()
    except OSError as exc:
        server.ledger.close()
        raise ConfigError(
            f"CYCLES_LOCAL_PORT={settings.cycles_local_port}: cannot listen ({exc.strerror}); "
            "use 0 for any free port"
        ) from None
    try:
        api_keys = seed(server.ledger, settings)
    except CyclesError as exc:
        server.stop()
        server.ledger.close()
        raise ConfigError(f"CYCLES_BASE_URL=local: cannot seed the ledger: {exc.message}") from None
    log.warning(
        "Cycles: using the embedded DEVELOPMENT ledger at %s (%s); "
        "set CYCLES_BASE_URL to a Cycles server for production",
        server.base_url,
        settings.cycles_local_db,
    )
    return EmbeddedCycles(server, api_keys)


def seed(ledger: LocalLedger, settings: Settings) -> dict[str, str]:
    """Create what each app tenant needs; return each app tenant's runtime API key."""
    allocated = budget_microcents(settings)
{%- if cookiecutter.tenant_isolation == "workspace" %}
    operator = settings.cycles_tenant
    ledger.create_tenant(operator)
    key = ledger.create_api_key(operator, settings.cycles_api_key or local_api_key(operator))
    for tenant in settings.tenants:
        _ensure_budget(ledger, f"tenant:{operator}/workspace:{tenant}", allocated)
    return dict.fromkeys(settings.tenants, key)
{%- else %}
    keys = {}
    for tenant in settings.tenants:
        ledger.create_tenant(tenant)
        wanted = settings.cycles_tenant_api_keys.get(tenant) or local_api_key(tenant)
        keys[tenant] = ledger.create_api_key(tenant, wanted)
        _ensure_budget(ledger, f"tenant:{tenant}", allocated)
    return keys
{%- endif %}


def _ensure_budget(ledger: LocalLedger, scope: str, allocated: int) -> None:
    if ledger.budget(scope, UNIT) is None:
        ledger.set_budget(scope, UNIT, allocated=allocated)
