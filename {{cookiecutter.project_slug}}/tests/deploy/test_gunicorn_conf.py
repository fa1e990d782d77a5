"""gunicorn.conf.py: where the server listens, and its start-up checks."""

from __future__ import annotations

import json
import logging
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
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
def signal_mask() -> Iterator[None]:
    """post_fork holds the stop signals of a new worker: not of the test process."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


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


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize(
    "name", ["LLM_TIMEOUT", "CYCLES_READ_TIMEOUT", "GUNICORN_THREADS", "WEB_CONCURRENCY"]
)
def test_a_number_gunicorn_cannot_use_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    """Not a traceback from the conf file or from inside gunicorn: the line of any other
    configuration problem."""
    conf = load_conf(monkeypatch, APP_ENV="testing", **{name: value})
    with pytest.raises(SystemExit) as exit_info:
        conf["on_starting"](SimpleNamespace(pidfile=None))
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    (line,) = [line for line in lines if not line.startswith(f"{settings_source.SERVICE}: ")]
    assert line.startswith(f"Error: {name}=")


def test_gunicorns_and_the_apps_problems_are_listed_together(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = load_conf(monkeypatch, APP_ENV="testing", CYCLES_MODE="audit", GUNICORN_THREADS="x")
    with pytest.raises(SystemExit):
        conf["on_starting"](SimpleNamespace(pidfile=None))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Error: 2 configuration problems:"
    assert [line.split("=")[0].strip() for line in lines[1:]] == ["CYCLES_MODE", "GUNICORN_THREADS"]


@pytest.mark.parametrize(
    ("env", "worker", "concurrency"),
    [
        ({}, "GeventWorker", ("worker_connections", 1000)),
        ({"GUNICORN_WORKER_CONNECTIONS": "50"}, "GeventWorker", ("worker_connections", 50)),
        ({"GUNICORN_WORKER_CLASS": "gthread"}, "ThreadWorker", ("threads", 8)),
        (
            {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "4"},
            "ThreadWorker",
            ("threads", 4),
        ),
    ],
)
def test_gevent_by_default_and_gthread_one_setting_away(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    worker: str,
    concurrency: tuple[str, int],
) -> None:
    conf = load_conf(monkeypatch, GUNICORN_HEADER_TIMEOUT="3", GUNICORN_BODY_TIMEOUT="4", **env)
    worker_class = conf["worker_class"]
    assert worker_class.__name__ == worker
    assert (worker_class.header_timeout, worker_class.body_timeout) == (3, 4)
    name, value = concurrency
    assert conf[name] == value
    assert conf["preload_app"] is False, "the app is imported in each worker, after patching"


def test_the_master_imports_nothing_of_the_app() -> None:
    """The workers are forks of the master, and the gevent worker patches the standard library
    as it starts: whatever of the app the master imported would escape the patching."""
    script = (
        "import json, runpy, sys\n"
        "from types import ModuleType, SimpleNamespace\n"
        f"conf = runpy.run_path({str(CONF)!r})\n"
        "conf['on_starting'](SimpleNamespace(pidfile=None))\n"
        "conf['on_exit'](None)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(READ_PREFIXES) and not name.endswith("_API_KEY")
    }
    env.update(APP_ENV="testing", PROMETHEUS_MULTIPROC_DIR="", FLASK_SKIP_DOTENV="1")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    package = "{{ cookiecutter.package_name }}"
    modules = json.loads(done.stdout.splitlines()[-1])
    assert package in modules, "the conf file read its settings with serving/"
    of_the_app = [m for m in modules if m.startswith(f"{package}.")]
    assert [m for m in of_the_app if not m.startswith(f"{package}.serving")] == []


def test_every_lowercase_name_in_the_conf_is_a_gunicorn_setting_and_no_control_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn ignores a name it does not know: a renamed setting would silently lapse."""
    conf = load_conf(monkeypatch)
    known = Config().settings
    # Everything the file defines for gunicorn: not its imports, helpers or private names.
    defined = [
        name
        for name, value in conf.items()
        if name.islower()
        and not name.startswith("_")
        and name != "annotations"
        and not isinstance(value, ModuleType)
        and not (callable(value) and name not in known)
    ]
    assert len(defined) > 10, "the conf file was not read"
    assert sorted(name for name in defined if name not in known) == []
    # Two servers on one host would fight over gunicorn's per-user control socket.
    assert conf["control_socket_disable"] is True


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
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(settings_source, "_announced", set())
    settings_log = logging.getLogger(settings_source.__name__)
    monkeypatch.setattr(settings_log, "filters", [])
    conf = load_conf(
        monkeypatch, APP_ENV="testing", LLM_PROVIDER="fake", CYCLES_JOURNAL_DIR=str(tmp_path)
    )
    conf["on_starting"](SimpleNamespace(pidfile=None))
    prefix = f"{settings_source.SERVICE}: "
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}APP_ENV=testing")
    # What each worker (a fork of the master) does next: build the app.
    worker = SimpleNamespace(load_wsgi=lambda: setattr(worker, "wsgi", create_app()))
    conf["post_fork"](SimpleNamespace(), worker)
    try:
        worker.load_wsgi()
        clients.close(worker.wsgi)
    finally:
        conf["on_exit"](None)  # removes the metrics directory on_starting made
    assert [r.getMessage() for r in caplog.records if r.name == settings_source.__name__] == []


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
    conf = load_conf(monkeypatch, APP_ENV="testing")
    conf["on_starting"](SimpleNamespace(pidfile=None))  # the check reads the warning
    conf["on_exit"](None)
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
