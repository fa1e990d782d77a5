"""The ledger file outlives the server: a new server on it shows the same state."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from runcycles import CyclesClient

from localcycles import LocalCyclesServer
from support.localcycles_kit import LC_UNIT, reservation_body


def test_restart_keeps_balances_keys_and_live_reservations(
    tmp_path: Path, lc_client_factory: Callable[..., CyclesClient]
) -> None:
    path = str(tmp_path / "restart.sqlite3")
    first = LocalCyclesServer(path).start()
    first.ledger.create_tenant("acme")
    key = first.ledger.create_api_key("acme")
    first.ledger.set_budget("tenant:acme", allocated=1_000)
    client = lc_client_factory(key, base_url=first.base_url)
    done = client.create_reservation(reservation_body(300))
    client.commit_reservation(
        done.body["reservation_id"],
        {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": LC_UNIT, "amount": 250}},
    )
    live = client.create_reservation(reservation_body(100)).body["reservation_id"]
    before = client.get_balances(tenant="acme").body
    first.stop()
    first.ledger.close()

    second = LocalCyclesServer(path).start()
    try:
        again = lc_client_factory(key, base_url=second.base_url)
        assert again.get_balances(tenant="acme").body == before
        assert before["balances"][0]["spent"]["amount"] == 250
        assert before["balances"][0]["reserved"]["amount"] == 100
        committed = again.commit_reservation(
            live, {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": LC_UNIT, "amount": 100}}
        )
        assert committed.status == 200
        assert (second.ledger.budget("tenant:acme") or {})["remaining"] == 650
    finally:
        second.stop()
        second.ledger.close()
