"""gunicorn's own settings, read from the environment and checked before it listens.

Every problem is one line naming the variable, in the words of the app's settings
(config_values.py), and gunicorn.conf.py stops with all of them at once. The timeouts the app
shares with this file (LLM_TIMEOUT, ...) are the app's to check: a value it will refuse only
falls back to its default here, so that the app's check reports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

WORKER_CLASSES = ("gevent", "gthread")


class ServingSettingsError(ValueError):
    """Settings gunicorn cannot start with: ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        if len(problems) == 1:
            message = problems[0]
        else:
            lines = "\n".join(f"  {problem}" for problem in problems)
            message = f"{len(problems)} configuration problems:\n{lines}"
        super().__init__(message)


@dataclass(frozen=True)
class ServingSettings:
    bind: list[str]
    worker_class: str  # one of WORKER_CLASSES
    workers: int
    threads: int  # gthread: requests served at once by each worker
    worker_connections: int  # gevent: connections (greenlets) served at once by each worker
    header_timeout: float  # seconds from a request's first byte to the end of its head
    body_timeout: float  # seconds from the end of the head to the end of the body
    timeout: int  # gunicorn kills a worker whose main loop is silent this long
    graceful_timeout: int


def _shown(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:56] + "...'"


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.text(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            self.problems.append(f"{name}={_shown(text)} is invalid: expected a whole number")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name}={text} is out of range: expected {low}..{high}")
            return default
        return value

    def seconds(self, name: str, default: float, low: float, high: float) -> float:
        text = self.text(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            self.problems.append(f"{name}={_shown(text)} is invalid: expected a number")
            return default
        if not low <= value <= high:  # also refuses nan and the infinities
            expected = f"{low:g}..{high:g}"
            self.problems.append(f"{name}={_shown(text)} is out of range: expected {expected}")
            return default
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        text = (self.text(name) or default).lower()
        if text not in allowed:
            expected = " or ".join(allowed)
            self.problems.append(f"{name}={_shown(text)} is invalid: expected {expected}")
            return default
        return text

    def bind(self, port: int) -> list[str]:
        name, text = "GUNICORN_BIND", self.text("GUNICORN_BIND") or "127.0.0.1"
        addresses = bind_addresses(text, port)
        for address in addresses:
            if address.startswith(("unix:", "fd://")):
                continue
            given_port = address.rpartition(":")[2]
            if not (given_port.isdigit() and int(given_port) <= 65535):
                problem = f"{name}={_shown(text)} is invalid: expected host, host:port or unix:path"
                self.problems.append(problem)
                return bind_addresses("127.0.0.1", port)
        return addresses

    def apps_seconds(self, name: str, default: float) -> float:
        """A timeout the app checks itself: a value it cannot mean is its default here."""
        try:
            value = float(self.text(name) or default)
        except ValueError:
            return default
        return value if 0 <= value <= 86_400 else default  # also refuses nan, inf


def bind_addresses(addresses: str, port: int) -> list[str]:
    """``GUNICORN_BIND``: comma-separated ``host``, ``host:port`` or ``unix:path``.

    A bare host (``0.0.0.0``, ``[::]``) listens on ``PORT``.
    """
    result = []
    for address in filter(None, (part.strip() for part in addresses.split(","))):
        bare_host = ":" not in address or address.endswith("]")
        result.append(f"{address}:{port}" if bare_host else address)
    return result


def read(env: Mapping[str, str], cpu_count: int | None) -> ServingSettings:
    """The settings of ``env``, or :class:`ServingSettingsError` listing every problem."""
    read = _Reader(env)
    port = read.integer("PORT", 8000, 0, 65535)
    settings = ServingSettings(
        bind=read.bind(port),
        worker_class=read.choice("GUNICORN_WORKER_CLASS", "gevent", WORKER_CLASSES),
        workers=read.integer("WEB_CONCURRENCY", min(cpu_count or 1, 4), 1, 256),
        threads=read.integer("GUNICORN_THREADS", 8, 1, 1024),
        worker_connections=read.integer("GUNICORN_WORKER_CONNECTIONS", 1000, 1, 100_000),
        header_timeout=read.seconds("GUNICORN_HEADER_TIMEOUT", 10, 0.1, 3600),
        body_timeout=read.seconds("GUNICORN_BODY_TIMEOUT", 30, 0.1, 3600),
        **_worker_timeouts(read),
    )
    if read.problems:
        raise ServingSettingsError(read.problems)
    return settings


def _worker_timeouts(read: _Reader) -> dict[str, int]:
    # A request may wait for Cycles (reserve, then commit) and for the LLM; the worker must
    # not be killed as silent before those timeouts have fired and the app has answered.
    llm = read.apps_seconds("LLM_TIMEOUT", 30)
    cycles_connect = read.apps_seconds("CYCLES_CONNECT_TIMEOUT", 2)
    cycles_read = read.apps_seconds("CYCLES_READ_TIMEOUT", 5)
    timeout = math.ceil(llm + 2 * cycles_read) + 15
    # That timeout watches each worker's main loop, not its requests: a request whose write
    # is blocked on a client that stopped reading is freed by the app, which charges such a
    # stream and cuts its connection within 1.5 x STREAM_WRITE_TIMEOUT (budget/hold_keeper.py).
    stuck_stream = 1.5 * read.apps_seconds("STREAM_WRITE_TIMEOUT", 30) + cycles_connect
    stuck_stream += cycles_read + 5
    # On SIGTERM finish requests in flight (commit what they spent) before exiting, including
    # a stream stuck on such a client.
    return {"timeout": timeout, "graceful_timeout": max(timeout, math.ceil(stuck_stream))}
