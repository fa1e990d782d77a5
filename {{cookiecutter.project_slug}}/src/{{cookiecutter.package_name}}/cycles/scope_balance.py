"""The caller's own budget in a Cycles answer that lists balances.

A reservation, a commit and ``GET /v1/balances`` answer with ``balances``: one row per
budgeted scope the call touched (the protocol's ``Balance``), which may include wider
scopes than the caller's own (in workspace isolation, the operator's cap over every
tenant). :func:`own_balance` picks the caller's row, the scope tenancy.py gives its
budget, and nothing else: another scope's figures are never shown to a caller.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Settings
from . import tenancy
from .clients import Balance


def own_balance(settings: Settings, tenant: str, rows: object) -> Balance | None:
    """``tenant``'s budget row in ``rows`` (an answer's ``balances``), or None if absent."""
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, Mapping) and is_own(settings, tenant, str(row.get("scope_path"))):
            return balance_of(row)
    return None


def is_own(settings: Settings, tenant: str, scope: str) -> bool:
    """Whether ``scope`` is the one holding ``tenant``'s budget."""
    # Cycles lower-cases scope values; tenant ids are lowercase already (config.py).
    return scope.lower() == tenancy.budget_scope(settings, tenant).lower()


def balance_of(row: Mapping[str, object]) -> Balance | None:
    """One protocol ``Balance`` row, or None when it lacks its ``remaining`` amount."""
    remaining = _amount(row, "remaining")
    if remaining is None:
        return None
    return Balance(
        scope=str(row.get("scope_path") or row.get("scope")),
        allocated=_amount(row, "allocated") or 0,
        spent=_amount(row, "spent") or 0,
        reserved=_amount(row, "reserved") or 0,
        remaining=remaining,
        debt=_amount(row, "debt") or 0,
    )


def _amount(row: Mapping[str, object], name: str) -> int | None:
    value = row.get(name)
    amount = value.get("amount") if isinstance(value, Mapping) else None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else None
