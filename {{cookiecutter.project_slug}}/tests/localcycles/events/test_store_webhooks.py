"""Subscriptions and threshold marks in the ledger file."""

from __future__ import annotations

from localcycles import LocalLedger
from localcycles.events.store import SYSTEM_TENANT, WebhookStore
from localcycles.protocol.webhook_requests import WebhookSpec

SPEC = WebhookSpec("http://127.0.0.1:1/hook", ("budget.threshold_crossed",), (0.8, 1.0), None)


def test_subscriptions_are_created_listed_and_deleted(lc_ledger: LocalLedger) -> None:
    store = WebhookStore(lc_ledger.db)
    mine = store.create("acme", SPEC, 1)
    every = store.create(None, SPEC, 2)
    assert mine.secret.startswith("whsec_") and mine.secret != every.secret
    assert every.tenant_id == SYSTEM_TENANT
    assert [s.subscription_id for s in store.subscriptions("acme")] == [mine.subscription_id]
    assert {s.subscription_id for s in store.listening("acme", "budget.threshold_crossed")} == {
        mine.subscription_id,
        every.subscription_id,
    }
    assert store.listening("globex", "budget.threshold_crossed") == [every]
    assert store.listening("acme", "budget.exhausted") == []
    assert store.delete(mine.subscription_id) and not store.delete(mine.subscription_id)
    assert store.get(mine.subscription_id) is None
    # A second store on the same file (a restart) sees what the first wrote.
    assert WebhookStore(lc_ledger.db).subscriptions() == [every]


def test_a_threshold_is_claimed_once_until_rearmed(lc_ledger: LocalLedger) -> None:
    store = WebhookStore(lc_ledger.db)
    sub = store.create("acme", SPEC, 1)
    args = (sub.subscription_id, "tenant:acme", "USD_MICROCENTS")
    assert store.claim(*args, 0.8) and store.claim(*args, 1.0)
    assert not store.claim(*args, 0.8)
    store.rearm(*args, below=0.9)
    assert store.marks(*args) == {0.8}
    assert store.claim(*args, 1.0) and not store.claim(*args, 0.8)
