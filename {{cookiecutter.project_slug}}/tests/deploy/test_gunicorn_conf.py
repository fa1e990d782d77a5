"""gunicorn.conf.py: where the server listens, and its start-up checks."""

from __future__ import annotations

import os
import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.errors import AppImportError
from gunicorn.glogging import Logger
from gunicorn.sock import close_sockets, create_sockets

from {{ cookiecutter.package_name }} import create_app, settings_source
from {{ cookiecutter.package_name }}.config import ConfigError
from {{ cookiecutter.package_name }}.cycles import clients
from {{ cookiecutter.package_name }}.web import caller_scheme

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
# What the conf file and the app read: none may leak in from the developer's shell.
READ_PREFIXES = ("APP_", "CYCLES_", "LLM_", "TENANT", "GUNICORN_", "PORT", "MAX_", "DEFAULT_")


@pytest.fixture(autouse=True)
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks choose PROMETHEUS_MULTIPROC_DIR when it is unset: keep that in the test."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))


def load_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in list(os.environ):
        if name.startswith(READ_PREFIXES) or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    # The hooks choose a metrics directory and export it: undo that when the test ends.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


@pytest.mark.parametrize(
    ("env", "bind"),
    [
        ({}, ["127.0.0.1:8000"]),
        ({"PORT": "9001"}, ["127.0.0.1:9001"]),
        ({"GUNICORN_BIND": "0.0.0.0", "PORT": "9001"}, ["0.0.0.0:9001"]),
        ({"GUNICORN_BIND": "[::]"}, ["[::]:8000"]),
        ({"GUNICORN_BIND": "10.0.0.5:7000, unix:/run/a"}, ["10.0.0.5:7000", "unix:/run/a"]),
    ],
)
def test_gunicorn_listens_on_loopback_unless_told(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], bind: list[str]
) -> None:
    assert load_conf(monkeypatch, **env)["bind"] == bind


def test_gunicorn_refuses_to_start_listing_every_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = load_conf(monkeypatch)
    monkeypatch.setenv("APP_ENV", "testing")
    monkeypatch.setenv("CYCLES_MODE", "audit")
    monkeypatch.setenv("CYCLES_APP", "x/workflow:y")
    with pytest.raises(SystemExit) as exit_info:
        conf["on_starting"](SimpleNamespace(pidfile=None))  # gunicorn's master, before binding
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Error: 2 configuration problems:"
    assert [line.split("=")[0].strip() for line in lines[1:]] == ["CYCLES_APP", "CYCLES_MODE"]


def test_gunicorn_starts_when_the_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch)
    monkeypatch.setenv("APP_ENV", "testing")
    assert conf["on_starting"](SimpleNamespace(pidfile=None)) is None


def test_gunicorn_refuses_to_start_without_app_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Development is never a silent fallback for a server of deployments."""
    conf = load_conf(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        conf["on_starting"](SimpleNamespace(pidfile=None))
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [f"Error: {settings_source.APP_ENV_REQUIRED}"]


def test_gunicorn_reads_dotenv_as_flask_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its own settings and the app's: the process environment over ``.env``."""
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the conf file exports .env here
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("APP_ENV=testing\nPORT=9001\nWEB_CONCURRENCY=3\n")
    conf = load_conf(monkeypatch, WEB_CONCURRENCY="2")
    assert (conf["bind"], conf["workers"]) == (["127.0.0.1:8000"], 2), "shielded in tests"
    monkeypatch.delenv("FLASK_SKIP_DOTENV")
    conf = load_conf(monkeypatch, WEB_CONCURRENCY="2")
    assert (conf["bind"], conf["workers"]) == (["127.0.0.1:9001"], 2)
    assert os.environ["APP_ENV"] == "testing", "the app in the workers reads the same"


def test_the_master_logs_the_start_up_line_and_its_workers_do_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(settings_source, "_announced", set())
    conf = load_conf(
        monkeypatch, APP_ENV="testing", LLM_PROVIDER="fake", CYCLES_JOURNAL_DIR=str(tmp_path)
    )
    conf["on_starting"](SimpleNamespace(pidfile=None))
    lines = [r.getMessage() for r in caplog.records if r.name == settings_source.__name__]
    assert len(lines) == 1 and lines[0].startswith(f"{settings_source.SERVICE}: APP_ENV=testing")
    try:
        app = create_app()  # what each worker (a fork of the master) does next
        clients.close(app)
    finally:
        conf["on_exit"](None)  # removes the metrics directory on_starting made
    assert [r.getMessage() for r in caplog.records if r.name == settings_source.__name__] == lines


def test_a_worker_reports_an_app_start_up_error_as_gunicorn_app_load_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn prints an AppImportError's message alone (no traceback) and halts."""

    def load_wsgi() -> None:  # the worker building the app, as create_app fails
        raise ConfigError("CYCLES_LOCAL_PORT=7878: cannot listen; use 0 for any free port")

    worker = SimpleNamespace(load_wsgi=load_wsgi)
    load_conf(monkeypatch)["post_fork"](SimpleNamespace(), worker)
    with pytest.raises(AppImportError) as caught:
        worker.load_wsgi()
    assert str(caught.value) == (
        "Error: CYCLES_LOCAL_PORT=7878: cannot listen; use 0 for any free port"
    )


@pytest.mark.parametrize(
    ("bind", "exposed"),
    [
        (["127.0.0.1:0"], []),
        (["0.0.0.0:0"], ["0.0.0.0"]),
        (["127.0.0.1:0", "0.0.0.0:0"], ["0.0.0.0"]),
    ],
)
def test_warns_when_listening_beyond_loopback_where_the_auth_needs_it(
    monkeypatch: pytest.MonkeyPatch, bind: list[str], exposed: list[str]
) -> None:
    """With trusted_header auth whoever reaches the port can name any tenant in X-Tenant-ID:
    say so at start-up. A key proves the caller (api_key auth): nothing to say."""
    conf = load_conf(monkeypatch)
    config = Config()
    config.set("bind", bind)
    listeners = create_sockets(config, Logger(config))  # real sockets, as gunicorn opens them
    warnings: list[str] = []
    log = SimpleNamespace(warning=lambda message, *args: warnings.append(message % args))
    try:
        conf["when_ready"](SimpleNamespace(LISTENERS=listeners, log=log))
    finally:
        close_sockets(listeners)
    if not exposed or caller_scheme.EXPOSED_LISTENER_WARNING is None:
        assert warnings == []
        return
    (warning,) = warnings
    assert "trusted_header" in warning and "X-Tenant-ID" in warning
    for host in exposed:
        assert f"http://{host}:" in warning
    assert "127.0.0.1" not in warning.split(" with ")[0]
