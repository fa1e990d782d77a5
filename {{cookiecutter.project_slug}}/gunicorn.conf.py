"""Gunicorn settings for production: ``gunicorn`` (no arguments) reads this file.

Every value can be changed through the environment (or ``.env``, as for ``flask``), so the
same image runs on a laptop, in compose and on a platform that injects ``PORT`` and
``WEB_CONCURRENCY``. gunicorn serves deployments: it refuses to start until ``APP_ENV`` is
set, and never falls back to the development defaults on its own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from flask.cli import load_dotenv
from flask.helpers import get_load_dotenv

# Settings: the process environment over .env, exactly as `flask` reads them (this is the
# function Flask's CLI calls; settings_source.py documents the rule). Exported here, before
# anything below reads a setting, so the workers, the app and every library see what
# `flask` would see. FLASK_SKIP_DOTENV=1 turns the files off.
if get_load_dotenv():
    load_dotenv()

# serving/ never imports the app (see on_starting): the gevent worker patches the standard
# library when a worker starts, and the app must be imported after that, in the worker.
from {{ cookiecutter.package_name }}.serving import boot_signals as serving_boot_signals
from {{ cookiecutter.package_name }}.serving import preflight
from {{ cookiecutter.package_name }}.serving import settings as serving_settings
from {{ cookiecutter.package_name }}.serving import workers as serving_workers

# Problems with these settings are reported with the app's, by on_starting; meanwhile the
# defaults stand in, so gunicorn gets that far.
try:
    _settings = serving_settings.read(os.environ, os.cpu_count())
    _problems: list[str] = []
except serving_settings.ServingSettingsError as error:
    _settings = serving_settings.read({}, os.cpu_count())
    _problems = list(error.problems)

wsgi_app = "{{ cookiecutter.package_name }}:create_app()"
# This machine only, unless told otherwise: a container publishes its port from outside
# and sets GUNICORN_BIND=0.0.0.0 (the Docker image does); a host behind a proxy on another
# machine sets the interface that proxy reaches.
bind = _settings.bind

# Each worker is a separate process with its own Cycles clients (and, with the embedded
# development ledger, its own ledger thread on the one shared SQLite file). LLM calls spend
# most of their time waiting: a gevent worker (the default) serves up to worker_connections
# of them at once, a gthread worker (GUNICORN_WORKER_CLASS=gthread) as many as its threads.
# Both answer gunicorn's own errors in JSON and cut clients too slow to send their request
# (serving/workers.py).
worker_class = serving_workers.worker_class(_settings)
workers = _settings.workers
threads = _settings.threads
worker_connections = _settings.worker_connections
# Never preload: clients, background threads and SQLite connections must not cross a fork.
preload_app = False
# gunicorn 25+ opens a control socket at one per-user path by default, so two servers on a
# host (two projects, a test run beside a dev server) would take it from each other, and
# anything running as this user could resize or stop the server through it. Nothing here
# uses gunicornc; a deployment that wants it removes this line and sets control_socket.
control_socket_disable = True

# Longer than a request's Cycles calls and LLM call; graceful_timeout lets requests in
# flight on SIGTERM commit what they spent (serving/settings.py).
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5

# Access log to stdout; never the Authorization header or request bodies.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def on_starting(server: Any) -> None:
    """Check every setting once, in the master, before anything listens.

    Every problem is printed, one line each, and gunicorn exits 1: no worker boots only to
    die with a traceback. APP_ENV must be set: development is never a silent fallback for a
    deployment. The check of the app's settings runs in a process of its own (the master
    does not import the app: serving/preflight.py) and logs the start-up line (APP_ENV,
    Cycles, provider, model) once; the workers do not repeat it. (Only the settings are
    read; nothing starts.)
    """
    # The check imports the app package and with it prometheus_client, which picks its
    # multiprocess mode once, on import: the metrics directory must be chosen first.
    pre_fork(server, None)
    outcome = preflight.check()
    problems = [*outcome.problems, *_problems]
    if problems:
        message = serving_settings.ServingSettingsError(problems)
        print(f"Error: {message}", file=sys.stderr, flush=True)
        if server.pidfile is not None:
            server.pidfile.unlink()
        raise SystemExit(1)
    if outcome.startup_line is not None:
        _startup_line.append(outcome.startup_line)
    if outcome.exposed_listener_warning is not None:
        _exposed_listener_warning.append(outcome.exposed_listener_warning)


_startup_line: list[str] = []  # logged by the master's check: the workers stay quiet
_exposed_listener_warning: list[str] = []  # web/caller_scheme.py's, as the check read it


def post_fork(server: Any, worker: Any) -> None:
    """What only a starting app can find wrong (the embedded ledger's port is taken, say) is
    reported like the settings: its lines alone, no traceback, and gunicorn stops."""
    serving_boot_signals.hold()  # held since pre_fork already; kept if pre_fork changes
    load_app = worker.load_wsgi

    def load_app_reporting_config_errors() -> None:
        for line in _startup_line:
            preflight.quiet_startup_line(line)
        try:
            load_app()  # the first import of the app in this process (gevent has patched)
            # The embedded ledger starts on first use; start it now, so that what only a
            # starting ledger finds (a busy CYCLES_LOCAL_PORT) stops gunicorn here.
            from {{ cookiecutter.package_name }}.cycles.clients import local_server

            local_server(worker.wsgi)
        except Exception as error:
            from gunicorn.errors import AppImportError

            from {{ cookiecutter.package_name }}.config import ConfigError

            if not isinstance(error, ConfigError):
                raise
            # gunicorn prints this message alone and halts: "App failed to load".
            raise AppImportError(f"Error: {error.format_message()}") from None

    worker.load_wsgi = load_app_reporting_config_errors


# Metrics of every worker (observability/metrics.py): prometheus-client's multiprocess mode
# keeps each worker's values in files in PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up.
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_metrics_dir_ready: list[str] = []
_metrics_dir_made: list[str] = []  # made here (not given): removed when gunicorn exits


def pre_fork(server: Any, worker: Any) -> None:
    """Before each worker: it is born holding the stop signals (serving/boot_signals.py).
    Before the first: one metrics directory, empty, inherited by every worker."""
    if worker is not None:  # (on_starting calls this too, for the directory alone)
        serving_boot_signals.hold_across_fork()
    if _metrics_dir_ready:
        return
    directory = os.environ.get(_METRICS_DIR) or ""
    if not directory:
        directory = tempfile.mkdtemp(prefix="prometheus-")
        _metrics_dir_made.append(directory)
    os.environ[_METRICS_DIR] = directory
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):  # counts of an earlier run of the server
        stale.unlink()
    _metrics_dir_ready.append(directory)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its counters stay in the sums; its live-only values are dropped."""
    if os.environ.get(_METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """gunicorn stops: remove the metrics directory it made for this run (not a given one)."""
    for directory in _metrics_dir_made:
        shutil.rmtree(directory, ignore_errors=True)


def when_ready(server: Any) -> None:
    """Warn when gunicorn listens beyond this machine and the way callers are named lets
    anyone who reaches the port pick a tenant (trusted_header auth: web/caller_scheme.py)."""
    import ipaddress
    import socket

    exposed = []
    for listener in server.LISTENERS:
        if listener.sock.family == socket.AF_UNIX:
            continue  # a socket file: only local processes allowed by its permissions
        host = listener.sock.getsockname()[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            exposed.append(str(listener))
    for warning in _exposed_listener_warning if exposed else ():
        server.log.warning(warning, ", ".join(exposed))
