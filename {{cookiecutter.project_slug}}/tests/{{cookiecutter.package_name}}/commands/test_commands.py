"""The app's command groups: `flask cycles` always; `flask tenants` where the bake has it
(api_key auth: callers' keys)."""

from __future__ import annotations

import importlib.util

from flask import Flask


def test_the_app_registers_every_command_group_it_has(app: Flask) -> None:
    has_tenants = importlib.util.find_spec("{{ cookiecutter.package_name }}.commands.tenants")
    assert set(app.cli.commands) == {"cycles"} | ({"tenants"} if has_tenants else set())
