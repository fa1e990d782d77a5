"""One settings source: the process environment over ``.env``, for every entry point.

``flask`` (its CLI loads ``.env`` itself), gunicorn (gunicorn.conf.py calls the same Flask
function) and any WSGI server calling ``create_app()`` (settings_source.py) must agree, and
a developer's ``.env`` in the project folder must never reach this suite.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.cli import FlaskGroup, load_dotenv
from flask.helpers import get_load_dotenv

from conftest import Provisioner, app_env, auth_headers
from {{ cookiecutter.package_name }} import create_app, settings_source
from {{ cookiecutter.package_name }}.config import ConfigError, app_settings
from {{ cookiecutter.package_name }}.cycles import clients as cycles_clients
from {{ cookiecutter.package_name }}.settings_source import SERVICE
from localcycles import LocalCyclesServer

PROJECT = Path(__file__).resolve().parents[2]  # tests/<package>/ -> the project
PACKAGE = "{{ cookiecutter.package_name }}"
MODEL = "{{ cookiecutter.model }}"
SERVER = "http://cycles.example:7878"
# The development caller of either bake: a dev key (api_key auth) and a dev tenant
# (trusted_header auth). Development accepts it; production must not.
DEV_CALLER = {"Authorization": "Bearer dev-key-acme", "X-Tenant-ID": "acme"}
# What the app reads: none may leak in from the developer's shell into these tests.
READ_PREFIXES = ("APP_", "CYCLES_", "LLM_", "TENANT", "MAX_", "DEFAULT_", "METRICS_", "LOG_")


@pytest.fixture
def unshielded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A project folder (the working directory) whose ``.env`` files are read; returned."""
    for name in list(os.environ):
        if name.startswith(READ_PREFIXES) or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("FLASK_SKIP_DOTENV", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def write_env(path: Path, settings: Mapping[str, str]) -> None:
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))


def test_the_process_environment_wins_over_env_over_flaskenv(
    unshielded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (unshielded / ".flaskenv").write_text("A=flaskenv\nB=flaskenv\nC=flaskenv\n")
    (unshielded / ".env").write_text("B=env\nC=env\n")
    monkeypatch.setenv("C", "process")
    found = settings_source.environment({"D": "override"})
    assert (found["A"], found["B"], found["C"], found["D"]) == (
        "flaskenv",
        "env",
        "process",
        "override",
    )
    assert "A" not in os.environ, "create_app reads .env without changing the environment"


@pytest.mark.parametrize(
    ("files", "skip"),
    [
        ({".env": "LLM_TIMEOUT=5\n"}, None),
        ({"../.env": "LLM_TIMEOUT=5\nAPP_ENV=production\n"}, None),  # the nearest, upwards
        (
            {
                "../.flaskenv": "APP_ENV=testing\nLLM_MODEL=from-flaskenv\nCYCLES_APP=a\n",
                ".env": "APP_ENV=production\nCYCLES_APP\nURL=http://${HOST}:1\nHOST=h\n",
            },
            None,
        ),
        ({".env": "LLM_TIMEOUT=5\n"}, "1"),
        ({".env": "LLM_TIMEOUT=5\n"}, "false"),
    ],
)
def test_the_files_and_their_order_are_the_ones_flask_reads(
    unshielded: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    skip: str | None,
) -> None:
    """What create_app reads is exactly what Flask's CLI and gunicorn.conf.py load."""
    cwd = unshielded / "sub"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name, text in files.items():
        (cwd / name).write_text(text)
    environ = {"HOST": "process", "LLM_MODEL": "process-model"}
    if skip is not None:
        environ["FLASK_SKIP_DOTENV"] = skip
    monkeypatch.setattr(os, "environ", environ)  # Flask's loader writes here
    ours = settings_source.environment()
    if get_load_dotenv():  # Flask's CLI and gunicorn.conf.py, to the letter
        load_dotenv()
    assert ours == environ


def test_a_dotenv_in_the_project_folder_does_not_reach_the_tests(
    cycles_server: LocalCyclesServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's shield (conftest.py): neither create_app nor Flask's CLI reads it."""
    for name in ("APP_ENV", "LLM_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "project"
    folder.mkdir()
    write_env(folder / ".env", {"LLM_TIMEOUT": "5", "APP_ENV": "production"})
    monkeypatch.chdir(folder)
    env = app_env(cycles_server.base_url, tmp_path)
    del env["APP_ENV"]
    app = create_app(env)
    assert (app_settings(app).app_env, app_settings(app).llm_timeout) == ("development", 30)
    cycles_clients.close(app)

    # Flask's CLI loads .env into the environment of the process: here, pytest's own.
    result = CliRunner().invoke(FlaskGroup(create_app=lambda: create_app(env)), ["routes"])
    assert result.exit_code == 0, result.output
    assert "LLM_TIMEOUT" not in os.environ


@pytest.mark.parametrize("source", ["dotenv", "environment"])
def test_an_app_built_from_either_source_is_the_same_production_app(
    unshielded: Path,
    monkeypatch: pytest.MonkeyPatch,
    cycles_server: LocalCyclesServer,
    tmp_path: Path,
    source: str,
) -> None:
    """create_app() with no arguments, as any WSGI server calls it: production from ``.env``
    as from the environment; the development caller is refused, the configured one served."""
    Provisioner(cycles_server.ledger).tenant("initech")
    settings = {
        **app_env(cycles_server.base_url, tmp_path, tenants=("initech",)),
        "APP_ENV": "production",
    }
    if source == "dotenv":
        write_env(unshielded / ".env", settings)
    else:
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
    app = create_app()
    try:
        assert app_settings(app).app_env == "production"
        client = app.test_client()
        assert client.get("/budget", headers=DEV_CALLER).status_code == 401
        served = client.get("/budget", headers=auth_headers("initech"))
        assert served.status_code == 200, served.get_data(as_text=True)
    finally:
        cycles_clients.close(app)


def production_settings(tmp_path: Path) -> dict[str, str]:
    return {
        **app_env(SERVER, tmp_path),
        "APP_ENV": "production",
        "LLM_MODEL": MODEL,
    }


def test_the_start_up_line_names_app_env_cycles_provider_and_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings_source, "_announced", set())
    caplog.set_level(logging.INFO, logger=settings_source.__name__)
    settings_source.load(tmp_path, production_settings(tmp_path))
    settings_source.load(tmp_path, production_settings(tmp_path))  # once per process
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            f"{SERVICE}: APP_ENV=production, Cycles at {SERVER}, provider fake, model {MODEL}",
        )
    ]


def test_development_by_default_says_so_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in list(os.environ):
        if name.startswith(READ_PREFIXES) or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings_source, "_announced", set())
    db = tmp_path / "ledger.sqlite3"
    settings = settings_source.load(tmp_path, {"CYCLES_LOCAL_DB": str(db), "LLM_PROVIDER": "fake"})
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert line.startswith(
        f"{SERVICE}: APP_ENV=development (APP_ENV not set: the default), "
        f"embedded Cycles ledger at {db}, provider fake, model {MODEL}"
    ), line
    if settings.tenant_key_hashes:  # api_key auth: the development keys are accepted
        assert line.endswith("; DEVELOPMENT caller keys accepted: dev-key-acme, dev-key-globex")


def test_gunicorn_requires_app_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_source.load(tmp_path, {"APP_ENV": ""}, require_app_env=True)
    assert caught.value.problems == (settings_source.APP_ENV_REQUIRED,)


# --- the entry points, as processes ----------------------------------------------------------


def entry_point_env(settings: Mapping[str, str]) -> dict[str, str]:
    """A clean environment with ``settings``, importing this project from its sources."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(READ_PREFIXES)
        and not name.endswith("_API_KEY")
        and name not in {"FLASK_SKIP_DOTENV", "FLASK_APP", "PROMETHEUS_MULTIPROC_DIR"}
    }
    path = [str(PROJECT / "src"), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, path)), **settings}


ENTRY_POINTS = {
    "flask": ["-m", "flask", "--app", PACKAGE, "routes"],
    "create_app": ["-c", f"from {PACKAGE} import create_app; create_app()"],
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(
    ("in_dotenv", "in_environment", "expected"),
    [
        ("production", None, "production"),
        (None, "production", "production"),
        ("production", "testing", "testing"),  # the process environment wins
    ],
)
def test_every_entry_point_reads_the_same_settings(
    tmp_path: Path,
    entry_point: str,
    in_dotenv: str | None,
    in_environment: str | None,
    expected: str,
) -> None:
    settings = production_settings(tmp_path)
    folder = tmp_path / "project"
    folder.mkdir()
    if in_dotenv:
        write_env(folder / ".env", {**settings, "APP_ENV": in_dotenv})
    env = entry_point_env({**settings, "APP_ENV": in_environment} if in_environment else {})
    result = subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry_point]],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{SERVICE}:")]
    assert lines == [
        f"{SERVICE}: APP_ENV={expected}, Cycles at {SERVER}, provider fake, model {MODEL}"
    ], result.stderr
