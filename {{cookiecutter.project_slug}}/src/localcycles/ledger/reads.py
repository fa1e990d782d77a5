"""Read-only protocol operations: one reservation, reservation lists, balance pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..protocol import wire
from ..protocol.errors import expired
from ..protocol.scopes import LEVELS, has_segment
from . import balances
from .accounting import Budget
from .db import Database
from .rows import expire_now, load_reservation, summary

Json = dict[str, Any]
Clock = Callable[[], int]


class LedgerReads:
    """GET endpoints of the protocol (a part of ``LocalLedger``)."""

    db: Database
    clock: Clock

    def get_reservation(
        self, tenant: str | None, reservation_id: str, *, with_usage: bool = False
    ) -> Json:
        """GET /v1/reservations/{id}; an EXPIRED reservation is 410.

        ``with_usage`` adds what the commit carried: the spec's ``committed_metadata`` and
        ``committed_metrics`` (a local extension). runcycles 0.5.3's strict model knows
        neither, so the HTTP layer asks for them only under the admin key.
        """
        expire_now(self.db, self.clock())
        with self.db.read() as conn:
            row = load_reservation(conn, tenant, reservation_id)
        if row["status"] == "EXPIRED":
            raise expired()
        detail = summary(row)
        if row["committed"] is not None:
            detail["committed"] = wire.amount(row["unit"], row["committed"])
        if row["finalized_at_ms"] is not None:
            detail["finalized_at_ms"] = row["finalized_at_ms"]
        if row["metadata"]:
            detail["metadata"] = json.loads(row["metadata"])
        if with_usage:
            if row["committed_metadata"]:
                detail["committed_metadata"] = json.loads(row["committed_metadata"])
            if row["committed_metrics"]:
                detail["committed_metrics"] = json.loads(row["committed_metrics"])
        return detail

    def reservation_metrics(self, reservation_id: str) -> Json | None:
        """The metrics the commit of ``reservation_id`` reported, if any."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT committed_metrics FROM reservations WHERE reservation_id = ?",
                (reservation_id,),
            ).fetchone()
        if row is None or not row["committed_metrics"]:
            return None
        return dict(json.loads(row["committed_metrics"]))

    def list_reservations(
        self,
        tenant: str,
        where: Sequence[tuple[str, Any]],
        order_by: str,
        descending: bool,
        after: tuple[Any, str] | None,
        limit: int,
    ) -> Json:
        """GET /v1/reservations; ``where`` holds (SQL predicate, parameter) pairs built by the
        HTTP layer from a fixed vocabulary, ``order_by`` a whitelisted column.

        Keyset pages, as the reference's sorted listing: ordered by ``order_by``, then by
        ``reservation_id`` ascending in either direction; ``after`` is the (sort value, id)
        of the previous page's last row, and ``last`` the same for this page when more
        follow. Rows created or finalized between two pages then shift nothing.
        """
        expire_now(self.db, self.clock())
        clauses = ["tenant_id = ?", *(clause for clause, _ in where)]
        params: list[Any] = [tenant, *(param for _, param in where)]
        if after is not None:
            beyond = "<" if descending else ">"
            clauses.append(f"({order_by} {beyond} ? OR ({order_by} = ? AND reservation_id > ?))")
            params.extend((after[0], after[0], after[1]))
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT * FROM reservations WHERE {' AND '.join(clauses)} "
            f"ORDER BY {order_by} {direction}, reservation_id ASC LIMIT ?"
        )
        with self.db.read() as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        page = rows[:limit]
        out: Json = {"rows": [summary(r) for r in page], "has_more": len(rows) > limit}
        if len(rows) > limit:
            out["last"] = (page[-1][order_by], page[-1]["reservation_id"])
        return out

    def balance_page(
        self, tenant: str, filters: dict[str, str], after: tuple[str, str] | None, limit: int
    ) -> tuple[list[Json], tuple[str, str] | None]:
        """GET /v1/balances page: protocol Balances and the keyset position of the last row."""
        expire_now(self.db, self.clock())
        clauses = ["tenant_id = ?"]
        params: list[Any] = [tenant]
        for level in LEVELS[1:]:
            value = filters.get(level)
            if value:
                clauses.append("instr('/' || scope || '/', ?) > 0")
                params.append(f"/{level}:{value.lower()}/")
        if after is not None:
            clauses.append("(scope, unit) > (?, ?)")
            params.extend(after)
        sql = f"SELECT * FROM budgets WHERE {' AND '.join(clauses)} ORDER BY scope, unit LIMIT ?"
        with self.db.read() as conn:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
        budgets = [
            b for b in map(Budget.from_row, rows) if has_segment(b.scope, f"tenant:{tenant}")
        ]
        page = budgets[:limit]
        last = (page[-1].scope, page[-1].unit) if len(budgets) > limit and page else None
        return [balances.balance(b) for b in page], last
