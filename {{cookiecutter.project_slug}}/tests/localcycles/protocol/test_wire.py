"""Wire shapes: amounts, and instants as ISO 8601 (UTC, ``Z``) and back to epoch ms."""

from __future__ import annotations

import pytest

from localcycles.protocol.wire import amount, iso, parse_iso_ms


def test_amount_is_unit_and_integer() -> None:
    assert amount("TOKENS", 7) == {"unit": "TOKENS", "amount": 7}


def test_instants_are_utc_with_a_z() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(1_700_000_000_123) == "2023-11-14T22:13:20.123000Z"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20z", 1_700_000_000_000),
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-14T22:13:20", 1_700_000_000_000),  # naive: taken as UTC
        ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
    ],
)
def test_parse_iso_ms(text: str, ms: int) -> None:
    assert parse_iso_ms(text) == ms


def test_an_instant_survives_the_round_trip() -> None:
    assert parse_iso_ms(iso(1_234_567_890_987)) == 1_234_567_890_987
