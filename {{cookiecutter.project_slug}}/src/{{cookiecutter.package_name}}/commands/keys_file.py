"""Keys files: the ``NAME=value`` env file ``flask cycles provision --keys-file`` keeps the
runtime API keys and their expiry in (readable by a shell and by python-dotenv; written
atomically, mode 600).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import click

from ..config import parse_instant


def read_keys_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file (as :func:`write_keys_file` writes them)."""
    if not path.exists():
        return {}
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name, sep, raw = line.strip().partition("=")
        if sep and not name.startswith("#"):
            try:
                parts = shlex.split(raw)
            except ValueError:
                raise click.ClickException(f"{path}:{number}: not a NAME=value line") from None
            values[name.strip()] = parts[0] if parts else ""
    return values


def write_keys_file(path: Path, values: Mapping[str, str]) -> None:
    # Written to a temporary name and renamed: a half-written file never looks complete.
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.chmod(0o600)  # it holds API keys
    tmp.replace(path)


def recorded_keys(file_values: Mapping[str, str]) -> dict[str, str]:
    """The runtime keys a keys file holds, by Cycles tenant (as cycles_tenancy.key_settings wrote
    them: ``CYCLES_TENANT`` + ``CYCLES_API_KEY``, or ``CYCLES_TENANT_API_KEYS`` pairs)."""
    keys = {}
    if file_values.get("CYCLES_TENANT") and file_values.get("CYCLES_API_KEY"):
        keys[file_values["CYCLES_TENANT"]] = file_values["CYCLES_API_KEY"]
    for item in file_values.get("CYCLES_TENANT_API_KEYS", "").split(","):
        tenant, _, key = (part.strip() for part in item.partition("="))
        if tenant and key:
            keys[tenant] = key
    return keys


def recorded_expiries(file_values: Mapping[str, str], where: Path) -> dict[str, datetime]:
    """When each recorded key ends, by Cycles tenant (``CYCLES_KEY_EXPIRES_AT`` pairs)."""
    found = {}
    for item in filter(None, file_values.get("CYCLES_KEY_EXPIRES_AT", "").split(",")):
        tenant, _, text = (part.strip() for part in item.partition("="))
        try:
            found[tenant] = parse_instant(text)
        except ValueError:
            raise click.ClickException(
                f"{where}: CYCLES_KEY_EXPIRES_AT: {tenant!r} has no valid date-time"
            ) from None
    return found
