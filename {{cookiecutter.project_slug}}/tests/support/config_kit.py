"""Reading settings in tests: straight from a dict, never from the process environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, Settings
from {{ cookiecutter.package_name }}.config_reader import read_settings

SERVER = "https://cycles.example.com"
SECRET = "cyc_live_Zx9SecretPart"  # must never appear in an error message
INSTANCE = Path("/tmp/instance")


def load(**env: str) -> Settings:
    """The settings of exactly ``env`` (nothing else is read)."""
    return read_settings(env, INSTANCE)


def problems(**env: str) -> tuple[str, ...]:
    """The problems :func:`load` reports for ``env`` (it must report some)."""
    with pytest.raises(ConfigError) as caught:
        load(**env)
    return caught.value.problems


def quotes_no_secret(found: tuple[str, ...]) -> bool:
    """Whether no problem quotes :data:`SECRET`, whole or in part."""
    text = "\n".join(found)
    return not any(part in text for part in (SECRET, SECRET[:12], "Zx9Secret"))
