"""Gunicorn settings for production: ``gunicorn`` (no arguments) reads this file.

Every value can be changed through the environment, so the same image runs on a laptop,
in compose and on a platform that injects ``PORT`` and ``WEB_CONCURRENCY``.
"""

from __future__ import annotations

import math
import os


def _number(name: str, default: float) -> float:
    # Invalid values fall back to the default here; the app itself validates the settings
    # it shares with this file (LLM_TIMEOUT, CYCLES_READ_TIMEOUT) and refuses to boot.
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


wsgi_app = "{{ cookiecutter.package_name }}:create_app()"
# All interfaces: inside a container the port is published (or proxied) from outside.
bind = f"0.0.0.0:{int(_number('PORT', 8000))}"

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
