"""Query parameters of the list endpoints: page size, subject filters and cursors."""

from __future__ import annotations

import base64

import pytest

from localcycles.protocol.errors import LedgerError
from localcycles.protocol.queries import (
    balance_cursor,
    decode_cursor,
    encode_cursor,
    limit,
    subject_filters,
)


def test_limit_defaults_to_50_and_takes_1_to_200() -> None:
    assert limit({}) == 50
    assert limit({"limit": ""}) == 50
    assert limit({"limit": "1"}) == 1
    assert limit({"limit": "200"}) == 200


@pytest.mark.parametrize("raw", ["0", "201", "-1", "1.5", "²", "abc", "0" * 4000 + "1"])
def test_a_bad_limit_is_a_400_naming_it(raw: str) -> None:
    with pytest.raises(LedgerError) as refused:
        limit({"limit": raw})
    assert refused.value.status == 400 and "limit must be an integer in [1, 200]" in str(
        refused.value
    )


def test_subject_filters_keep_the_levels_given() -> None:
    params = {"tenant": "acme", "app": "", "agent": "bot", "other": "x"}
    assert subject_filters(params) == {"tenant": "acme", "agent": "bot"}
    with pytest.raises(LedgerError, match="workspace must be at most 128 characters"):
        subject_filters({"workspace": "w" * 129})


def test_a_cursor_round_trips() -> None:
    payload = {"o": 50, "f": "abc"}
    assert decode_cursor(encode_cursor(payload)) == payload
    assert balance_cursor(encode_cursor({"after": ["tenant:acme", "USD_MICROCENTS"]})) == (
        "tenant:acme",
        "USD_MICROCENTS",
    )
    assert balance_cursor(None) is None and balance_cursor("") is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b"{broken").decode(),
        "é",
        "A" * 1025,
    ],
)
def test_a_forged_or_damaged_cursor_is_a_400(cursor: str) -> None:
    with pytest.raises(LedgerError, match="cursor is not valid"):
        decode_cursor(cursor)


@pytest.mark.parametrize("after", [None, ["one"], ["a", 1], ["a", "b" * 1025]])
def test_a_balance_cursor_must_carry_a_position(after: object) -> None:
    with pytest.raises(LedgerError, match="cursor is not valid"):
        balance_cursor(encode_cursor({"after": after}))
