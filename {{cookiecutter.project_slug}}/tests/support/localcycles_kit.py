"""Constants and helpers shared by the embedded server's tests (tests/localcycles/).

Fixtures live in ``support.localcycles_fixtures``, which ``tests/conftest.py`` loads.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from localcycles import LocalLedger

LC_TENANT = "acme"
LC_ADMIN_KEY = "test-admin-key"
LC_UNIT = "USD_MICROCENTS"


class FakeClock:
    """Injectable server clock (epoch ms) so expiry tests advance time instead of sleeping."""

    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def reservation_body(
    amount: int,
    *,
    subject: dict[str, str] | None = None,
    key: str | None = None,
    unit: str = LC_UNIT,
    **extra: Any,
) -> dict[str, Any]:
    """A POST /v1/reservations body (also fits /v1/decide without lease fields)."""
    body: dict[str, Any] = {
        "idempotency_key": key or uuid.uuid4().hex,
        "subject": subject or {"tenant": LC_TENANT},
        "action": {"kind": "llm.completion", "name": "test-model"},
        "estimate": {"unit": unit, "amount": amount},
    }
    body.update(extra)
    return body


# Every table a request could change; secrets are stored hashed, so nothing here is a secret.
LEDGER_TABLES = ("tenants", "api_keys", "budgets", "reservations", "idempotency", "events")


def ledger_state(ledger: LocalLedger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the ledger, for "a rejected request changed nothing" assertions."""
    with ledger.db.read() as conn:
        return {
            table: [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]
            for table in LEDGER_TABLES
        }


def assert_ledger_invariants(ledger: LocalLedger) -> None:
    """On every budget: remaining = allocated - spent - reserved - debt (as served), no
    negative holds, and ``reserved`` equals the live holds that cover the scope."""
    with ledger.db.read() as conn:
        tenants = [row["tenant_id"] for row in conn.execute("SELECT tenant_id FROM tenants")]
    # Listing first: it returns lapsed holds to their budgets, as every request does.
    budgets = [budget for tenant in tenants for budget in ledger.list_budgets(tenant)]
    with ledger.db.read() as conn:
        holds = conn.execute(
            "SELECT unit, amount, budgeted_scopes FROM reservations WHERE status = 'ACTIVE'"
        ).fetchall()
    held: dict[tuple[str, str], int] = {}
    for hold in holds:
        for scope in json.loads(hold["budgeted_scopes"]):
            key = (scope, hold["unit"])
            held[key] = held.get(key, 0) + hold["amount"]
    for budget in budgets:
        figures = {
            name: budget[name]["amount"]
            for name in ("allocated", "spent", "reserved", "debt", "remaining")
        }
        assert figures["remaining"] == (
            figures["allocated"] - figures["spent"] - figures["reserved"] - figures["debt"]
        ), budget
        assert figures["reserved"] >= 0 and figures["spent"] >= 0, budget
        assert figures["reserved"] == held.get((budget["scope"], budget["unit"]), 0), budget
