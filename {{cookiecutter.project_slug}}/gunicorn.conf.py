"""Gunicorn settings for production: ``gunicorn`` (no arguments) reads this file.

Every value can be changed through the environment, so the same image runs on a laptop,
in compose and on a platform that injects ``PORT`` and ``WEB_CONCURRENCY``.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any


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
# On SIGTERM finish requests in flight (commit what they spent) before exiting.
graceful_timeout = timeout
keepalive = 5

# Access log to stdout; never the Authorization header or request bodies.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def on_starting(server: Any) -> None:
    """Check the app's settings once, in the master, before anything listens.

    Every problem is printed, one line each, and gunicorn exits 1: no worker boots only to
    die with a traceback. (Only the settings are read here; nothing is started.)
    """
    from {{ cookiecutter.package_name }}.config import ConfigError, check_environment

    try:
        check_environment(os.environ)
    except ConfigError as error:
        print(f"Error: {error.format_message()}", file=sys.stderr, flush=True)
        if server.pidfile is not None:
            server.pidfile.unlink()
        raise SystemExit(1) from None
{%- if cookiecutter.tenant_auth == "trusted_header" %}


def when_ready(server: Any) -> None:
    """Callers are whoever sets ``X-Tenant-ID``: warn when more than this machine can."""
    import ipaddress
    import socket

    exposed = []
    for listener in server.LISTENERS:
        if listener.sock.family == socket.AF_UNIX:
            continue  # a socket file: only local processes allowed by its permissions
        host = listener.sock.getsockname()[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            exposed.append(str(listener))
    if exposed:
        server.log.warning(
            "Listening beyond loopback at %s with trusted_header auth: anyone who can reach "
            "this port can claim any tenant in X-Tenant-ID. Let only your gateway reach it, "
            "or bind 127.0.0.1 (GUNICORN_BIND).",
            ", ".join(exposed),
        )
{%- endif %}
