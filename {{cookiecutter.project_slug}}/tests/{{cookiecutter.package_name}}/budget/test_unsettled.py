"""The file of unsettled charges and live streams: whose streams may be adopted, how often
a stream writes to it, and what it takes over from runcycles' journal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from runcycles.journal import CommitJournal, PendingCommitRecord

from conftest import CountingProvider, Provisioner, assert_error, auth_headers
from {{ cookiecutter.package_name }}.budget import reservations
from {{ cookiecutter.package_name }}.budget.service import budget_service
from {{ cookiecutter.package_name }}.budget.unsettled import Charge, UnsettledStore
from {{ cookiecutter.package_name }}.llm import StreamProgress
from {{ cookiecutter.package_name }}.llm.fake import FakeProvider
from localcycles import LocalCyclesServer

MAX_TOKENS = 256


def stream_record(reservation_id: str, amount: int) -> Charge:
    commit = {"idempotency_key": "k1", "actual": {"unit": "USD_MICROCENTS", "amount": amount}}
    return Charge("k1", "acme", amount, reservation_id, 0, "commit", commit, {}, attempts=0)


def test_only_the_streams_of_a_process_that_ended_are_adopted(tmp_path: Path) -> None:
    live, other = UnsettledStore(tmp_path), UnsettledStore(tmp_path)
    live.stream(stream_record("rsv_1", 10))
    live.stream(stream_record("rsv_1", 25))  # the stream went on: its record grows
    other.owner()
    assert other.adopt_orphans() == []  # its owner holds its lock: alive
    assert other.charges() == []

    live.close()  # its lock goes, as when a process dies
    (adopted,) = other.adopt_orphans()
    assert (adopted.reservation_id, adopted.amount) == ("rsv_1", 25)
    assert other.charges() == [("acme", 25)]
    assert other.adopt_orphans() == []  # once
    other.close()


class Long(FakeProvider):
    """One byte per delta, as many as max_tokens allows."""

    def stream(
        self, *, prompt: str, max_tokens: int, progress: StreamProgress, **kwargs: Any
    ) -> Iterator[str]:
        progress.input_tokens = 5
        for _ in range(max_tokens):
            progress.add_text("x")
            yield "x"


def test_a_stream_writes_its_record_a_few_times_not_once_per_delta(
    app: Flask, provisioner: Provisioner
) -> None:
    app.extensions["llm"] = Long("fake-model")
    store = budget_service(app).settler.store
    written: list[int] = []
    record = store.stream

    def counting(charge: Charge) -> None:
        written.append(charge.amount)
        record(charge)

    store.stream = counting  # type: ignore[method-assign]
    response = app.test_client().post(
        "/chat",
        json={"prompt": "go", "max_tokens": MAX_TOKENS, "stream": True},
        headers=auth_headers("acme"),
    )
    assert response.get_data(as_text=True).count("event: delta") == MAX_TOKENS
    # 64, 128, 256 bytes: the bound doubles each time the stream passes it.
    assert len(written) == 3
    assert written == sorted(written)
    assert store.adopt_orphans() == []  # settled: its record is gone
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]


def test_what_runcycles_journal_kept_moves_to_the_store_and_lands(
    app: Flask,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    cycles_server: LocalCyclesServer,
    tmp_path: Path,
) -> None:
    # As an earlier version of this app left it: a commit that never landed and a spend
    # event of a call served while Cycles was down, in runcycles' own journal.
    budget = budget_service(app)
    with app.test_request_context("/chat"):
        hold = reservations.reserve(budget, "acme", "chat", 5_000)
    budget.close()
    assert hold.reservation_id is not None
    subject = budget.cycles.subject_body("acme")
    action = reservations.action_body(budget)
    event = {"subject": subject, "action": action}
    journal = CommitJournal(tmp_path / "journal" / "0123456789abcdef")
    for record in (
        PendingCommitRecord(
            hold.reservation_id,
            "http://old-port",
            commit_body={"idempotency_key": "k-commit", "actual": amount(3_000)},
            event_fallback_body={**event, "idempotency_key": "k-commit", "actual": amount(3_000)},
        ),
        PendingCommitRecord(
            "unguarded-k-event",
            "http://old-port",
            mode="event",
            event_fallback_body={**event, "idempotency_key": "k-event", "actual": amount(1_234)},
        ),
    ):
        journal.record(record)

    upgraded = budget_service(make_app(cycles_server.base_url))
    upgraded.settler.background = False
    upgraded.settler.run_due()  # its settler's first pass
    balance = provisioner.balance("acme")
    assert (balance["spent"], balance["reserved"]) == (3_000 + 1_234, 0)
    assert provisioner.reservation_statuses("acme") == ["COMMITTED"]
    assert not list((tmp_path / "journal").glob("*/*.json"))
    assert upgraded.settler.store.charges() == []


def amount(value: int) -> dict[str, Any]:
    return {"unit": "USD_MICROCENTS", "amount": value}


def test_a_journal_folder_that_cannot_be_written_refuses_before_any_work(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder")
    app = make_app(cycles_server.base_url, CYCLES_JOURNAL_DIR=str(occupied / "journal"))
    provider = CountingProvider()
    app.extensions["llm"] = provider
    response = app.test_client().post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme"))
    assert_error(response, 503, "cycles_misconfigured")
    assert provider.calls == 0
    assert any("CYCLES_JOURNAL_DIR=" in record.getMessage() for record in caplog.records)
    assert provisioner.balance("acme")["reserved"] == 0
