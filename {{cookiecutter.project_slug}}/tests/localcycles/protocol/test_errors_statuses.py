"""Protocol errors: each helper's HTTP status and stable ``error`` code."""

from __future__ import annotations

from localcycles.protocol.errors import (
    LedgerError,
    conflict,
    expired,
    forbidden,
    invalid,
    not_found,
    unauthorized,
)


def test_each_helper_has_its_status_and_code() -> None:
    made = [
        invalid("bad", {"field": "x"}),
        unauthorized("who"),
        forbidden("no"),
        not_found("gone"),
        conflict("BUDGET_EXCEEDED", "short", {"scope": "tenant:a"}),
        expired(),
    ]
    assert [(e.status, e.code) for e in made] == [
        (400, "INVALID_REQUEST"),
        (401, "UNAUTHORIZED"),
        (403, "FORBIDDEN"),
        (404, "NOT_FOUND"),
        (409, "BUDGET_EXCEEDED"),
        (410, "RESERVATION_EXPIRED"),
    ]
    assert made[0].details == {"field": "x"} and made[4].details == {"scope": "tenant:a"}
    assert str(made[0]) == made[0].message == "bad"


def test_headers_default_to_none_given() -> None:
    assert LedgerError(405, "INVALID_REQUEST", "no").headers == {}
    assert LedgerError(405, "X", "no", headers={"Allow": "GET"}).headers == {"Allow": "GET"}
