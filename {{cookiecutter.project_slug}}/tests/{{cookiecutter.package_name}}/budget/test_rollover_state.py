"""The rollover record: which period each budget last rolled over to, per server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.budget.rollover_state import RolloverState, RolloverStateError

MARCH = datetime(2027, 3, 1, tzinfo=UTC)
APRIL = datetime(2027, 4, 1, tzinfo=UTC)


def test_a_recorded_period_is_read_back_by_a_later_run(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rollover.json"
    RolloverState(path, "local").record("tenant:acme", MARCH)
    later = RolloverState(path, "local")
    assert later.rolled_to("tenant:acme") == MARCH
    assert later.rolled_to("tenant:globex") is None


def test_servers_never_share_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "rollover.json"
    RolloverState(path, "local").record("tenant:acme", MARCH)
    assert RolloverState(path, "http://cycles-admin:7979").rolled_to("tenant:acme") is None


def test_two_writers_keep_each_others_entries(tmp_path: Path) -> None:
    path = tmp_path / "rollover.json"
    first, second = RolloverState(path, "local"), RolloverState(path, "local")
    first.record("tenant:acme", MARCH)
    second.record("tenant:globex", APRIL)
    first.record("tenant:acme", APRIL)
    assert second.rolled_to("tenant:acme") == APRIL
    assert first.rolled_to("tenant:globex") == APRIL
    assert [p.name for p in tmp_path.iterdir()] == ["rollover.json"]  # no temporary left


def test_an_unreadable_record_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "rollover.json"
    path.write_text("{not json")
    with pytest.raises(RolloverStateError, match="cannot read the rollover record"):
        RolloverState(path, "local").rolled_to("tenant:acme")


def test_many_scopes_are_recorded_and_read_back_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's end users are recorded a batch per write and read a batch per read."""
    path = tmp_path / "rollover.json"
    state = RolloverState(path, "local")
    state.record("tenant:acme", MARCH)
    users = [f"tenant:acme/agent:user-{n}" for n in range(3)]
    writes: list[int] = []
    real_write = RolloverState._write

    def counted(self: RolloverState, entries: dict[str, object]) -> None:
        writes.append(len(entries))
        real_write(self, entries)

    monkeypatch.setattr(RolloverState, "_write", counted)
    state.record_each(users, APRIL)
    assert writes == [4]  # one write, the earlier entry kept
    found = RolloverState(path, "local").rolled_to_each([*users, "tenant:acme", "tenant:x"])
    assert found == {**dict.fromkeys(users, APRIL), "tenant:acme": MARCH, "tenant:x": None}
