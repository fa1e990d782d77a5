"""The embedded development ledger: started when ``CYCLES_BASE_URL=local``.

It is a real Cycles-protocol server on 127.0.0.1 over a SQLite file in the instance folder,
so development runs the same client code as production. It is seeded on start with the
Cycles tenants, API keys and budgets the app's tenants need; budgets that already exist
are left alone, so a restart never refills a spent budget.

Runtime keys: under ``APP_ENV=development`` each Cycles tenant gets a stable, guessable key
(``cyc_local_<tenant>``), convenient with curl. Anywhere else (tests, or production with
``CYCLES_LOCAL_FORCE``) a random key is generated at first start and kept in the ledger file,
so a restart reuses it, and a stable key left from development is revoked. Either kind holds
only the runtime permissions: no key the app uses can create or fund budgets.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from decimal import Decimal

from localcycles import LedgerError, LocalCyclesServer, LocalLedger

from ..config import ConfigError, Settings
from ..money import MICROCENTS_PER_USD, format_usd
from . import tenancy

log = logging.getLogger(__name__)


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
    """The stable key of a Cycles tenant of the embedded ledger (APP_ENV=development only)."""
    return f"cyc_local_{cycles_tenant}"


def runtime_key(ledger: LocalLedger, settings: Settings, cycles_tenant: str) -> str:
    """The key the app uses for ``cycles_tenant`` when the settings name none (see above)."""
    stable = local_api_key(cycles_tenant)
    if settings.app_env == "development":
        return stable
    ledger.revoke_api_key(stable)
    return ledger.keep_secret(
        f"runtime-key:{cycles_tenant}", lambda: "cyc_local_" + secrets.token_urlsafe(24)
    )


def budget_microcents(settings: Settings) -> int:
    # CYCLES_LOCAL_BUDGET_USD has at most 8 decimals (validated), so this is exact.
    return int(Decimal(settings.cycles_local_budget_usd) * MICROCENTS_PER_USD)


def allocation_for(settings: Settings, tenant: str) -> int:
    """What ``tenant``'s budget is made with: its plan's allocation, if it has a plan,
    else CYCLES_LOCAL_BUDGET_USD."""
    plan = settings.plan_for(tenant)
    return plan.allocated if plan is not None else budget_microcents(settings)


def budget_drift(ledger: LocalLedger, settings: Settings) -> str | None:
    """One line naming each budget whose allocation is not what the settings make (the
    ledger keeps existing budgets, so a changed CYCLES_LOCAL_BUDGET_USD or plan is not
    applied by a restart), and the commands that apply them; None when all match."""
    differ, fixes = [], []
    for tenant in settings.tenants:
        found = ledger.budget(tenancy.budget_scope(settings, tenant))
        wanted = allocation_for(settings, tenant)
        if found is None or found["allocated"] == wanted:
            continue
        plan, held = settings.plan_for(tenant), format_usd(found["allocated"])
        if plan is None:
            usd = settings.cycles_local_budget_usd
            differ.append(f"{tenant} {held} (CYCLES_LOCAL_BUDGET_USD={usd})")
            fixes.append(f"`flask cycles set-budget {tenant} {usd}`")
        else:
            differ.append(f"{tenant} {held} (plan {plan.name}: {format_usd(plan.allocated)})")
            fixes.append("`flask cycles provision`")
    if not differ:
        return None
    return (
        "Cycles: the embedded ledger keeps the budgets it has, and these differ from the "
        f"settings: {', '.join(differ)}; to apply the settings run "
        + ", ".join(dict.fromkeys(fixes))
    )


def start(settings: Settings) -> EmbeddedCycles:
    """Start the embedded ledger on ``settings.cycles_local_db`` and seed it."""
    settings.cycles_local_db.parent.mkdir(parents=True, exist_ok=True)
    # The admin API serves `flask cycles ...` in this process only: a fresh key each start.
    server = LocalCyclesServer(
        str(settings.cycles_local_db),
        port=settings.cycles_local_port,
        admin_key=secrets.token_urlsafe(24),
    )
    # How long a retried call replays its first answer; older records are pruned.
    server.ledger.replay_window_days = settings.cycles_local_replay_days
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
    except LedgerError as exc:
        server.stop()
        server.ledger.close()
        raise ConfigError(f"CYCLES_BASE_URL=local: cannot seed the ledger: {exc.message}") from None
    drift = budget_drift(server.ledger, settings)
    if drift is not None:
        log.warning("%s", drift)
    log.warning(
        "Cycles: using the embedded DEVELOPMENT ledger at %s (%s); "
        "set CYCLES_BASE_URL to a Cycles server for production",
        server.base_url,
        settings.cycles_local_db,
    )
    return EmbeddedCycles(server, api_keys)


def seed(ledger: LocalLedger, settings: Settings) -> dict[str, str]:
    """Create what each app tenant needs (see tenancy.py); each one's runtime key."""
    return tenancy.seed(
        ledger,
        settings,
        lambda tenant: allocation_for(settings, tenant),
        lambda cycles_tenant: runtime_key(ledger, settings, cycles_tenant),
    )
