"""Idempotency of admin fundBudget, kept the way the reference admin server keeps it.

The reference checks and caches a funding's key inside the same atomic script as the
balance change, and that cache differs from the runtime endpoints' idempotency:

* one key space for every funding: the key alone names the record, not the tenant, scope
  or unit (so keys must be unique across budgets: a key reused on another budget with the
  same body replays the first answer and funds nothing, with another body it is a 409);
* the hash covers the whole request body (operation, amount, spent, reason, metadata,
  key), not the query's scope and unit;
* a record lives 24 hours from the funding that wrote it; after that the key is new again;
* the replay is checked before the budget is looked up, so it answers even for a budget
  since frozen, closed or gone.

A record sits in the shared ``idempotency`` table under the empty tenant, which no real
tenant id can be, so retention's pruning still bounds it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..protocol import wire
from ..protocol.admin_requests import Funding
from .rows import payload_hash, remember, replay

Json = dict[str, Any]

#: The reference's funding-cache lifetime (EXPIRE 86400 seconds).
FUND_REPLAY_WINDOW_MS = 86_400_000
_GLOBAL = ""
_ENDPOINT = "fund"


def body_hash(request: Funding) -> str:
    """Hash of the funding body as sent: every field of it, none of the query."""
    spent = None if request.spent is None else {"unit": request.unit, "amount": request.spent}
    return payload_hash(
        {
            "operation": request.operation,
            "amount": {"unit": request.unit, "amount": request.amount},
            "spent": spent,
            "reason": request.reason,
            "idempotency_key": request.idempotency_key,
            "metadata": request.metadata,
        }
    )


def replayed(conn: sqlite3.Connection, key: str, digest: str, now: int) -> Json | None:
    """The first answer for ``key`` if it is under 24 hours old (409 IDEMPOTENCY_MISMATCH
    for another body); None when the key is new or its record has expired (then dropped)."""
    conn.execute(
        "DELETE FROM idempotency WHERE tenant_id = ? AND endpoint = ? AND key = ? "
        "AND created_at_ms <= ?",
        (_GLOBAL, _ENDPOINT, key, now - FUND_REPLAY_WINDOW_MS),
    )
    answer = replay(conn, _GLOBAL, _ENDPOINT, key, digest)
    if answer is not None:
        # The reference rebuilds the answer from cached figures, stamped when replayed.
        answer["timestamp"] = wire.iso(now)
    return answer


def record(conn: sqlite3.Connection, key: str, digest: str, answer: Json, now: int) -> None:
    remember(conn, _GLOBAL, _ENDPOINT, key, digest, answer, now)
