"""Row helpers: the idempotency hash of a request body."""

from __future__ import annotations

from localcycles.ledger.rows import payload_hash


def test_the_hash_ignores_key_order_and_spacing_but_not_values() -> None:
    first = payload_hash({"a": 1, "b": {"c": [1, 2], "d": "é"}})
    assert first == payload_hash({"b": {"d": "é", "c": [1, 2]}, "a": 1})
    assert first != payload_hash({"a": 1, "b": {"c": [2, 1], "d": "é"}})
    assert first != payload_hash({"a": 1.0, "b": {"c": [1, 2], "d": "é"}})
    assert len(first) == 64
