"""Forwarding to a tenant's URL: signed, retried with backoff, dropped after the last try,
never to an internal address, and to the very address that was checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.alerts import forwarder as forwarder_module
from {{ cookiecutter.package_name }}.alerts.destinations import LOOPBACK, Destinations
from {{ cookiecutter.package_name }}.alerts.forwarder import Forwarder
from {{ cookiecutter.package_name }}.alerts.signatures import sign
from {{ cookiecutter.package_name }}.alerts.store import AlertStore
from support.webhook_receiver import webhook_receiver

BODY = json.dumps({"id": "evt_1", "type": "budget.threshold_crossed"}).encode()
# The receivers here listen on 127.0.0.1: allowed, as outside production by default.
LOCAL = Destinations(LOOPBACK)


def queued(tmp_path: Path, url: str) -> AlertStore:
    store = AlertStore(tmp_path)
    store.set_webhook("acme", url, "whsec_tenant")
    store.accept("evt_1", ("acme", "evt_1", "budget.threshold_crossed", BODY))
    return store


def test_backoff_doubles_and_is_capped() -> None:
    forwarder = Forwarder(AlertStore(Path("/nonexistent")), base_delay_s=1.0)
    assert [forwarder.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert forwarder.delay(20) == forwarder_module.MAX_DELAY_S


def test_a_forward_is_retried_until_delivered_signed(tmp_path: Path) -> None:
    with webhook_receiver(statuses=[503, 500]) as receiver:
        store = queued(tmp_path, receiver.url)
        forwarder = Forwarder(store, LOCAL, base_delay_s=0.01)
        forwarder.kick()
        (got,) = receiver.wait_for(1)
        forwarder.stop()
    assert receiver.answers == [503, 500, 200]
    assert got.body == BODY
    assert got.headers["x-budget-alert-signature"] == sign("whsec_tenant", BODY)
    assert got.headers["x-budget-alert-id"] == "evt_1"
    assert got.headers["x-budget-alert-type"] == "budget.threshold_crossed"
    assert store.pending() == 0


def test_a_forward_is_dropped_after_the_last_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forwarder_module, "MAX_ATTEMPTS", 2)
    with webhook_receiver(statuses=[500] * 5) as receiver:
        store = queued(tmp_path, receiver.url)
        forwarder = Forwarder(store, LOCAL, base_delay_s=0.0)
        assert forwarder.run_once() == 0
        assert forwarder.run_once() == 0
        assert receiver.answers == [500, 500]
    assert store.pending() == 0


def test_no_url_no_forward(tmp_path: Path) -> None:
    store = queued(tmp_path, "http://127.0.0.1:9/never")
    store.delete_webhook("acme")
    assert Forwarder(store).run_once() == 0
    assert store.pending() == 0


def test_an_internal_address_is_refused_at_send_time(tmp_path: Path) -> None:
    """Registered while allowed (or a DNS answer that changed since): never posted."""
    with webhook_receiver() as receiver:
        store = queued(tmp_path, receiver.url)
        assert Forwarder(store, Destinations()).run_once() == 0
        assert receiver.answers == []
    assert store.pending() == 1  # retried later, as a failed attempt


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_posted_to(
    tmp_path: Path,
) -> None:
    """No second DNS lookup to rebind: the POST goes to the checked address, under the name."""
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        store = queued(tmp_path, f"http://alerts.tenant.invalid:{port}/hook")
        assert Forwarder(store, Destinations(LOOPBACK, resolver)).run_once() == 1
        (got,) = receiver.received
    assert lookups == ["alerts.tenant.invalid"]  # .invalid never resolves in real DNS
    assert got.headers["host"] == f"alerts.tenant.invalid:{port}"
    assert got.body == BODY
