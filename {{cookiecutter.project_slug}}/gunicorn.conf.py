"""Gunicorn settings for production: ``gunicorn`` (no arguments) reads this file.

Every value can be changed through the environment (or ``.env``, as for ``flask``), so the
same image runs on a laptop, in compose and on a platform that injects ``PORT`` and
``WEB_CONCURRENCY``. gunicorn serves deployments: it refuses to start until ``APP_ENV`` is
set, and never falls back to the development defaults on its own.
"""

from __future__ import annotations

import math
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


def _number(name: str, default: float) -> float:
    # Invalid values fall back to the default here; the app itself validates the settings
    # it shares with this file (LLM_TIMEOUT, CYCLES_READ_TIMEOUT) and refuses to boot.
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def _bind(addresses: str, port: int) -> list[str]:
    """``GUNICORN_BIND``: comma-separated ``host``, ``host:port`` or ``unix:path``.

    A bare host (``0.0.0.0``, ``[::]``) listens on ``PORT``.
    """
    result = []
    for address in filter(None, (part.strip() for part in addresses.split(","))):
        bare_host = ":" not in address or address.endswith("]")
        result.append(f"{address}:{port}" if bare_host else address)
    return result


wsgi_app = "{{ cookiecutter.package_name }}:create_app()"
# This machine only, unless told otherwise: a container publishes its port from outside
# and sets GUNICORN_BIND=0.0.0.0 (the Docker image does); a host behind a proxy on another
# machine sets the interface that proxy reaches.
bind = _bind(os.environ.get("GUNICORN_BIND") or "127.0.0.1", int(_number("PORT", 8000)))

# Each worker is a separate process with its own Cycles clients (and, with the embedded
# development ledger, its own ledger thread on the one shared SQLite file). Threads serve
# concurrent requests inside a worker: LLM calls spend most of their time waiting.
worker_class = "gthread"
workers = max(1, int(_number("WEB_CONCURRENCY", min(os.cpu_count() or 1, 4))))
threads = max(1, int(_number("GUNICORN_THREADS", 8)))
# Never preload: clients, background threads and SQLite connections must not cross a fork.
preload_app = False

# A request may wait for Cycles (reserve, then commit) and for the LLM; the worker must not
# be killed as silent before those timeouts have fired and the app has answered.
_request_budget_s = _number("LLM_TIMEOUT", 30) + 2 * _number("CYCLES_READ_TIMEOUT", 5)
timeout = math.ceil(_request_budget_s) + 15
# That timeout watches each worker's main loop, not its request threads: a thread whose
# write is blocked on a client that stopped reading is freed by the app, which charges such
# a stream and cuts its connection within 1.5 x STREAM_WRITE_TIMEOUT (budget/hold_keeper.py).
_stuck_stream_s = (
    1.5 * _number("STREAM_WRITE_TIMEOUT", 30)
    + _number("CYCLES_CONNECT_TIMEOUT", 2)
    + _number("CYCLES_READ_TIMEOUT", 5)
    + 5
)
# On SIGTERM finish requests in flight (commit what they spent) before exiting, including
# a stream stuck on such a client.
graceful_timeout = max(timeout, math.ceil(_stuck_stream_s))
keepalive = 5

# Access log to stdout; never the Authorization header or request bodies.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def on_starting(server: Any) -> None:
    """Check the app's settings once, in the master, before anything listens.

    Every problem is printed, one line each, and gunicorn exits 1: no worker boots only to
    die with a traceback. APP_ENV must be set: development is never a silent fallback for a
    deployment. The master logs the start-up line (APP_ENV, Cycles, provider, model) once;
    its workers inherit that and stay quiet. (Only the settings are read; nothing starts.)
    """
    # The check imports the app package and with it prometheus_client, which picks its
    # multiprocess mode once, on import: the metrics directory must be chosen first.
    pre_fork(server, None)
    from {{ cookiecutter.package_name }} import settings_source
    from {{ cookiecutter.package_name }}.config import ConfigError

    try:
        settings_source.load(settings_source.instance_path(), require_app_env=True)
    except ConfigError as error:
        print(f"Error: {error.format_message()}", file=sys.stderr, flush=True)
        if server.pidfile is not None:
            server.pidfile.unlink()
        raise SystemExit(1) from None


def post_fork(server: Any, worker: Any) -> None:
    """What only a starting app can find wrong (the embedded ledger's port is taken, say) is
    reported like the settings: its lines alone, no traceback, and gunicorn stops."""
    load_app = worker.load_wsgi

    def load_app_reporting_config_errors() -> None:
        from gunicorn.errors import AppImportError

        from {{ cookiecutter.package_name }}.config import ConfigError

        try:
            load_app()
            # The embedded ledger starts on first use; start it now, so that what only a
            # starting ledger finds (a busy CYCLES_LOCAL_PORT) stops gunicorn here.
            from {{ cookiecutter.package_name }}.cycles.clients import local_server

            local_server(worker.wsgi)
        except ConfigError as error:
            # gunicorn prints this message alone and halts: "App failed to load".
            raise AppImportError(f"Error: {error.format_message()}") from None

    worker.load_wsgi = load_app_reporting_config_errors


# Metrics of every worker (observability/metrics.py): prometheus-client's multiprocess mode
# keeps each worker's values in files in PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up.
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_metrics_dir_ready: list[str] = []
_metrics_dir_made: list[str] = []  # made here (not given): removed when gunicorn exits


def pre_fork(server: Any, worker: Any) -> None:
    """Before the first worker: one metrics directory, empty, inherited by every worker."""
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

    from {{ cookiecutter.package_name }}.web.caller_scheme import EXPOSED_LISTENER_WARNING

    if EXPOSED_LISTENER_WARNING is None:
        return
    exposed = []
    for listener in server.LISTENERS:
        if listener.sock.family == socket.AF_UNIX:
            continue  # a socket file: only local processes allowed by its permissions
        host = listener.sock.getsockname()[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            exposed.append(str(listener))
    if exposed:
        server.log.warning(EXPOSED_LISTENER_WARNING, ", ".join(exposed))
