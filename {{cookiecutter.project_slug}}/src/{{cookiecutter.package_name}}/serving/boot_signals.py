"""A worker asked to stop while it boots stops, instead of serving until it is killed.

Between its fork and installing its own signal handlers a worker still runs the master's:
a SIGTERM then (the master stopping, or a deploy) is taken for the master's and lost, and
the worker serves on until the master kills it after ``graceful_timeout``. The gevent worker
makes that window long (it patches the standard library first). So the signals that stop a
worker are held from gunicorn.conf.py's ``post_fork`` and delivered once the worker's own
handlers are in place.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


def hold() -> None:
    """In a new worker: keep the stop signals pending until its handlers are installed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class DeliveredAfterInit:
    """Mixed into a gunicorn worker class, before it: releases what :func:`hold` kept."""

    def init_signals(self) -> None:
        super().init_signals()  # type: ignore[misc]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
