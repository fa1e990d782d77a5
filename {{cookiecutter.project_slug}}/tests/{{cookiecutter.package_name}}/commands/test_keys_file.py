"""Keys files: written whole and private, read back as written, a bad line named."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from {{ cookiecutter.package_name }}.commands.keys_file import (
    read_keys_file,
    recorded_expiries,
    recorded_keys,
    write_keys_file,
)


def test_a_written_file_reads_back_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "cycles.env"
    values = {"CYCLES_TENANT_API_KEYS": "acme=k 1,globex=k'2", "CYCLES_TENANT": ""}
    write_keys_file(path, values)
    assert read_keys_file(path) == values
    assert path.stat().st_mode & 0o077 == 0
    assert not path.with_name("cycles.env.tmp").exists()


def test_keys_come_from_either_isolations_settings(tmp_path: Path) -> None:
    assert recorded_keys({"CYCLES_TENANT": "operator", "CYCLES_API_KEY": "k0"}) == {
        "operator": "k0"
    }
    assert recorded_keys({"CYCLES_TENANT_API_KEYS": "acme=k1, globex = k2"}) == {
        "acme": "k1",
        "globex": "k2",
    }
    assert read_keys_file(tmp_path / "missing.env") == {}


def test_a_bad_line_or_date_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "cycles.env"
    path.write_text("# comment\nCYCLES_API_KEY='unterminated\n")
    with pytest.raises(click.ClickException, match=r"cycles.env:2: not a NAME=value line"):
        read_keys_file(path)
    with pytest.raises(click.ClickException, match=r"CYCLES_KEY_EXPIRES_AT: 'acme'"):
        recorded_expiries({"CYCLES_KEY_EXPIRES_AT": "acme=soon"}, path)
