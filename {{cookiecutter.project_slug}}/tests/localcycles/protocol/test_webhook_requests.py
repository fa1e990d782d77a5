"""Webhook subscription bodies: the reference admin API's fields and rules, one 400 each."""

from __future__ import annotations

from typing import Any

import pytest

from localcycles.protocol.errors import LedgerError
from localcycles.protocol.webhook_requests import webhook_create

VALID = {
    "url": "http://127.0.0.1:5000/webhooks/cycles",
    "event_types": ["budget.threshold_crossed", "budget.exhausted"],
    "thresholds": {"budget_utilization": [0.95, 0.8, 1.0]},
}


def test_a_valid_body_keeps_the_thresholds_sorted_and_the_secret_optional() -> None:
    spec = webhook_create(dict(VALID))
    assert spec.budget_utilization == (0.8, 0.95, 1.0)
    assert spec.event_types == ("budget.threshold_crossed", "budget.exhausted")
    assert spec.signing_secret is None
    assert webhook_create({**VALID, "signing_secret": "s3cret"}).signing_secret == "s3cret"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"url": "ftp://x"}, "url"),
        ({"url": None}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["Budget Exhausted"]}, "event_types"),
        ({"thresholds": {"budget_utilization": [1.5]}}, "budget_utilization"),
        ({"thresholds": {"budget_utilization": [True]}}, "budget_utilization"),
        ({"thresholds": {"budget_utilization": [float("nan")]}}, "budget_utilization"),
        ({"thresholds": {"budgetUtilization": [0.5]}}, "thresholds.budgetUtilization"),
        ({"signing_secret": ""}, "signing_secret"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(change: dict[str, Any], named: str) -> None:
    with pytest.raises(LedgerError) as raised:
        webhook_create({**VALID, **change})
    assert raised.value.status == 400
    assert named in raised.value.message
