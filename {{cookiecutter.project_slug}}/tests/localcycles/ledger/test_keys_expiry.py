"""An API key past its expiry is refused, with the reference's boundary and despite the
one-second cache of accepted keys.

The reference (cycles-server's and cycles-server-admin's ``ApiKeyRepository.validate``)
refuses a key when the time is after its ``expires_at``: at the instant itself it is still
valid. It reads the key on every request, so the embedded server's cache must never carry
an accepted key past that instant. Over real HTTP, on a clock the test moves.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from runcycles import CyclesClient

from localcycles import LocalLedger
from localcycles.ledger.keys import AUTH_CACHE_MS
from support.localcycles_kit import LC_TENANT, FakeClock, reservation_body

LIFETIME_MS = AUTH_CACHE_MS // 2  # the key expires while its first acceptance is cached


def test_a_key_is_accepted_until_its_expiry_and_refused_right_after_even_if_cached(
    lc_ledger: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", allocated=1_000)
    expires = lc_clock.now_ms + LIFETIME_MS
    key = lc_ledger.create_api_key(LC_TENANT, expires_at_ms=expires)
    unused = lc_ledger.create_api_key(LC_TENANT, "cyc_local_unused", expires_at_ms=expires)

    def balances(secret: str) -> httpx.Response:
        headers = {"X-Cycles-API-Key": secret}
        return lc_http.get(f"/v1/balances?tenant={LC_TENANT}", headers=headers)

    assert balances(key).status_code == 200  # accepted, and cached for AUTH_CACHE_MS
    lc_clock.advance(LIFETIME_MS)
    # At the instant of expiry a key is still valid, looked up afresh or from the cache.
    assert (balances(unused).status_code, balances(key).status_code) == (200, 200)
    lc_clock.advance(1)
    assert balances(unused).status_code == 401
    refused = balances(key)
    assert refused.status_code == 401
    assert refused.json()["error"] == "UNAUTHORIZED" and "KEY_EXPIRED" in refused.json()["message"]
    assert lc_ledger.check_key(key) == "KEY_EXPIRED"


def test_an_expired_key_cannot_reserve_through_the_client(
    lc_ledger: LocalLedger,
    lc_client_factory: Callable[..., CyclesClient],
    lc_clock: FakeClock,
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    lc_ledger.set_budget(f"tenant:{LC_TENANT}", allocated=1_000)
    key = lc_ledger.create_api_key(LC_TENANT, expires_at_ms=lc_clock.now_ms + LIFETIME_MS)
    client = lc_client_factory(key)
    assert client.create_reservation(reservation_body(10)).status == 200
    lc_clock.advance(LIFETIME_MS + 1)
    refused = client.create_reservation(reservation_body(10))
    assert refused.status == 401
    budget = lc_ledger.budget(f"tenant:{LC_TENANT}")
    assert budget is not None and budget["reserved"] == 10  # the refused one held nothing
