"""A worker asked to stop while it boots stops, instead of serving until it is killed.

Between its fork and installing its own signal handlers a worker still runs the master's:
a SIGTERM then (the master stopping, or a deploy) is taken for the master's and lost, and
the worker serves on until the master kills it after ``graceful_timeout``. The gevent worker
makes that window long (it patches the standard library first). So the signals that stop a
worker are held from before its fork until the worker's own handlers are in place: the
master blocks them in gunicorn.conf.py's ``pre_fork`` (a fork copies the signal mask, so
the worker is born holding them) and takes them back as soon as the fork returns; the
worker's ``init_signals`` delivers what waited. (Held only from ``post_fork`` on, a
SIGTERM sent to the whole process group as the worker logged "Booting worker", and the
master's own SIGTERM a moment later, could both land before it, on a loaded machine.)
"""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

_held_for_fork: list[bool] = []  # the master blocked them for the fork under way
_registered: list[bool] = []


def hold() -> None:
    """In a new worker: keep the stop signals pending until its handlers are installed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def hold_across_fork() -> None:
    """In gunicorn's master, just before it forks a worker: the worker starts holding the
    stop signals; the master holds them only until the fork returns."""
    if not _registered:
        os.register_at_fork(after_in_parent=_release_in_master, after_in_child=_forget)
        _registered.append(True)
    hold()
    _held_for_fork.append(True)


def _release_in_master() -> None:
    if _held_for_fork:
        _held_for_fork.clear()
        # A stop that arrived meanwhile is delivered now, to the master's own handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _forget() -> None:
    """In the worker: the signals stay held (its init_signals releases them)."""
    _held_for_fork.clear()


class DeliveredAfterInit:
    """Mixed into a gunicorn worker class, before it: releases what :func:`hold` kept."""

    def init_signals(self) -> None:
        super().init_signals()  # type: ignore[misc]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
