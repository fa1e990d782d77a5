"""Where the settings come from, the same for every entry point, and the line that says so.

The process environment wins over ``.env``, which wins over ``.flaskenv``: each file is the
nearest one found from the current working directory upwards (run the app from the project
folder). That is the rule ``flask`` applies when its CLI loads ``.env``, so every entry point
agrees with it: ``flask ...`` (Flask's CLI), ``gunicorn`` (gunicorn.conf.py calls the same
Flask function before anything reads a setting) and any WSGI server calling ``create_app()``
(which reads the files here, without changing ``os.environ``). ``FLASK_SKIP_DOTENV=1`` turns
the files off for all of them; the test suite sets it, so a developer's ``.env`` never
reaches the tests.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values, find_dotenv
from flask import Flask
from flask.helpers import get_load_dotenv

from .config import DEV_TENANTS, ConfigError, Settings, dev_caller_key, hash_api_key
from .config_reader import read_settings

SERVICE = "{{ cookiecutter.project_slug }}"
PACKAGE = __name__.rpartition(".")[0]
# Later files win, as in flask.cli.load_dotenv.
DOTENV_FILES = (".flaskenv", ".env")
APP_ENV_REQUIRED = (
    "APP_ENV is not set: a server for deployments does not fall back to development "
    "(embedded ledger, development caller keys); set APP_ENV=production, or "
    "APP_ENV=development to run the development defaults on purpose"
)

log = logging.getLogger(__name__)
# Lines already logged by this process. Process state on purpose: gunicorn's master logs
# the line once, and its workers (forks of the master) inherit this set and stay quiet.
_announced: set[str] = set()


def dotenv_settings() -> dict[str, str]:
    """What the ``.env`` files say, exactly as Flask's CLI reads them (nothing when
    ``FLASK_SKIP_DOTENV`` is set)."""
    if not get_load_dotenv():
        return {}
    found: dict[str, str | None] = {}
    for name in DOTENV_FILES:
        path = find_dotenv(name, usecwd=True)
        if path:
            found |= dotenv_values(path, encoding="utf-8")
    # A bare ``NAME`` line (no ``=``) sets nothing, also over a value of an earlier file.
    return {name: value for name, value in found.items() if value is not None}


def environment(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``overrides`` over the process environment over the ``.env`` files."""
    return {**dotenv_settings(), **os.environ, **(overrides or {})}


def load(
    instance_path: Path,
    overrides: Mapping[str, str] | None = None,
    *,
    require_app_env: bool = False,
) -> Settings:
    """The validated settings (:class:`ConfigError` lists every problem); logs the start-up line.

    ``require_app_env``: for servers of deployments (gunicorn), development must be asked for.
    """
    env = environment(overrides)
    problems = [] if env.get("APP_ENV", "").strip() or not require_app_env else [APP_ENV_REQUIRED]
    try:
        settings = read_settings(env, instance_path)
    except ConfigError as error:
        raise ConfigError([*problems, *error.problems]) from None
    if problems:
        raise ConfigError(problems)
    announce(settings, env)
    return settings


def instance_path() -> Path:
    """The instance folder ``create_app`` uses (for a process that does not build the app)."""
    return Path(Flask(PACKAGE, instance_relative_config=True).instance_path)


def startup_line(settings: Settings, env: Mapping[str, str]) -> str:
    """``<service>: APP_ENV=..., <Cycles server or embedded ledger>, provider ..., model ...``.

    CYCLES_BASE_URL never carries credentials (config.py refuses user:password@).
    """
    app_env: str = settings.app_env
    if not env.get("APP_ENV", "").strip():
        app_env += " (APP_ENV not set: the default)"
    if settings.uses_local_cycles:
        cycles = f"embedded Cycles ledger at {settings.cycles_local_db}"
    else:
        cycles = f"Cycles at {settings.cycles_base_url}"
    line = (
        f"{SERVICE}: APP_ENV={app_env}, {cycles}, "
        f"provider {settings.llm_provider}, model {settings.llm_model}"
    )
    dev_keys = [
        dev_caller_key(tenant)
        for tenant in DEV_TENANTS
        if hash_api_key(dev_caller_key(tenant)) in settings.tenant_key_hashes
    ]
    if dev_keys:
        line += f"; DEVELOPMENT caller keys accepted: {', '.join(dev_keys)}"
    return line


def announce(settings: Settings, env: Mapping[str, str]) -> None:
    """Log the start-up line once per process: a warning in development, else info."""
    line = startup_line(settings, env)
    if line in _announced:
        return
    _announced.add(line)
    ensure_handler(log)
    log.log(logging.WARNING if settings.app_env == "development" else logging.INFO, "%s", line)


def ensure_handler(logger: logging.Logger) -> None:
    """The logger's lines are INFO: print them on stderr when nobody configured logging."""
    logger.setLevel(logging.INFO)
    if logging.getLogger().handlers or logger.handlers:
        return  # the deployment (or pytest) decides where log records go
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
