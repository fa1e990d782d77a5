"""Delivery as the reference events service does it: signed, retried with backoff."""

from __future__ import annotations

import hashlib
import hmac

from localcycles.events.delivery import Deliverer, Delivery, RetryPolicy, sign
from support.webhook_receiver import webhook_receiver

FAST = RetryPolicy(max_retries=2, initial_delay_s=0.01, multiplier=2.0, max_delay_s=0.05)


def delivery(url: str) -> Delivery:
    return Delivery(url, "whsec_test", b'{"event_id":"evt_1"}', "evt_1", "budget.threshold_crossed")


def test_the_signature_is_sha256_hmac_of_the_raw_body() -> None:
    expected = hmac.new(b"whsec_test", b"{}", hashlib.sha256).hexdigest()
    assert sign("whsec_test", b"{}") == "sha256=" + expected


def test_the_reference_retry_schedule_doubles_from_one_second_capped_at_sixty() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.delay(9) == 60.0


def test_a_failed_delivery_is_retried_until_a_2xx_with_the_headers() -> None:
    with webhook_receiver(statuses=[500, 503]) as receiver:
        assert Deliverer(FAST).deliver(delivery(receiver.url))
        assert receiver.answers == [500, 503, 200]
        got = receiver.received[0]
    assert got.body == b'{"event_id":"evt_1"}'
    assert got.headers["x-cycles-signature"] == sign("whsec_test", got.body)
    assert got.headers["x-cycles-event-id"] == "evt_1"
    assert got.headers["x-cycles-event-type"] == "budget.threshold_crossed"
    assert got.headers["content-type"] == "application/json"


def test_delivery_gives_up_after_the_retries() -> None:
    with webhook_receiver(statuses=[500, 500, 500, 500]) as receiver:
        assert not Deliverer(FAST).deliver(delivery(receiver.url))
        assert receiver.answers == [500, 500, 500]


def test_submit_delivers_from_the_background_thread() -> None:
    deliverer = Deliverer(FAST)
    with webhook_receiver() as receiver:
        deliverer.submit(delivery(receiver.url))
        assert receiver.wait_for(1)[0].headers["x-cycles-event-id"] == "evt_1"
    deliverer.stop()
