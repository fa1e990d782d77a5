"""The alerts file: tenants' webhooks, received event ids (bounded), the outbox."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.alerts import store as store_module
from {{ cookiecutter.package_name }}.alerts.store import AlertStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_webhooks_are_set_replaced_and_deleted_durably(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    store.set_webhook("acme", "https://a.example/hook", "whsec_1")
    store.set_webhook("acme", "https://b.example/hook", "whsec_2")
    assert AlertStore(tmp_path).webhook("acme") == store.webhook("acme")
    found = store.webhook("acme")
    assert found is not None and (found.url, found.secret) == ("https://b.example/hook", "whsec_2")
    assert (tmp_path / store_module.FILE_NAME).stat().st_mode & 0o077 == 0
    assert store.delete_webhook("acme") and not store.delete_webhook("acme")
    assert store.webhook("acme") is None


def test_an_event_id_is_accepted_once_and_its_forward_queued_with_it(tmp_path: Path) -> None:
    store = AlertStore(tmp_path)
    forward = ("acme", "evt_1", "budget.threshold_crossed", b"{}")
    assert store.accept("evt_1", forward)
    assert not store.accept("evt_1", forward)
    assert store.pending() == 1


def test_seen_ids_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_SEEN_EVENTS", 3)
    store = AlertStore(tmp_path)
    for n in range(5):
        assert store.accept(f"evt_{n}", None)
    assert store.accept("evt_0", None)  # forgotten: the oldest beyond the bound
    assert not store.accept("evt_4", None)


def test_claimed_forwards_are_leased_and_retried_later(tmp_path: Path) -> None:
    clock = Clock()
    store = AlertStore(tmp_path, clock)
    store.accept("evt_1", ("acme", "evt_1", "budget.threshold_crossed", b"{}"))
    (claimed,) = store.claim_due(lease_s=60)
    assert store.claim_due(lease_s=60) == []  # another worker skips it meanwhile
    store.retry(claimed.id, 1, delay_s=5)
    clock.now += 4
    assert store.claim_due(lease_s=60) == []
    clock.now += 1
    (again,) = store.claim_due(lease_s=60)
    assert again.attempts == 1
    store.done(again.id)
    assert store.pending() == 0 and store.next_due() is None


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_a_forked_worker_opens_its_own_connection_and_the_parent_keeps_its(
    tmp_path: Path,
) -> None:
    # gunicorn forks workers from a master that may have used the store already; SQLite
    # forbids using a connection across fork() (locks and caches are per process).
    store = AlertStore(tmp_path)
    store.set_webhook("acme", "https://a.example/hook", "whsec_1")
    inherited = store._conn
    store.webhook("acme")
    assert store._conn is inherited  # one connection per process, not one per call

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: never return into pytest
        status = 1
        try:
            os.close(read_end)
            store.set_webhook("globex", "https://g.example/hook", "whsec_2")
            os.write(write_end, b"own" if store._conn is not inherited else b"inherited")
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert report == b"own"
    assert store._conn is inherited
    found = store.webhook("globex")  # the worker's write, through the parent's connection
    assert found is not None and found.url == "https://g.example/hook"
