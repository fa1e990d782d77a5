"""Reservations: budget code that needs no request, only what it is given."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from conftest import CyclesStub, Provisioner
from {{ cookiecutter.package_name }}.budget import reservations
from {{ cookiecutter.package_name }}.budget.service import budget_service


def test_a_hold_is_taken_and_released_outside_any_request(
    recorder: CyclesStub, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # No app or request context at all (as in a worker or a command): the request id the
    # hold serves is passed in, and travels to Cycles with the reservation.
    budget = budget_service(make_app(recorder.base_url))
    hold = reservations.reserve(budget, "acme", "chat", 5_000, request_id="job-17")
    assert hold.held and hold.request_id == "job-17"
    reservations.release(budget, hold, "not_needed")
    (reserve,) = recorder.bodies("/v1/reservations")
    assert reserve["metadata"] == {"route": "chat", "request_id": "job-17"}
    assert provisioner.reservation_statuses("acme") == ["RELEASED"]


def test_without_a_request_id_no_metadata_names_one(
    recorder: CyclesStub, make_app: Callable[..., Flask]
) -> None:
    budget = budget_service(make_app(recorder.base_url))
    hold = reservations.reserve(budget, "acme", "chat", 5_000)
    reservations.release(budget, hold, "not_needed")
    (reserve,) = recorder.bodies("/v1/reservations")
    assert reserve["metadata"] == {"route": "chat"}
