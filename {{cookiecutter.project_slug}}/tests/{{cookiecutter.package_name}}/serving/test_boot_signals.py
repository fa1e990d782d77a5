"""A stop signal that reaches a worker while it boots waits for the worker's own handler."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from {{ cookiecutter.package_name }}.serving import boot_signals


class BootingWorker:
    """gunicorn's worker, as far as signals go: init_signals installs its handlers."""

    def __init__(self) -> None:
        self.stopped: list[int] = []

    def init_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.handle_exit)

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.stopped.append(signum)


class Worker(boot_signals.DeliveredAfterInit, BootingWorker):
    pass


@pytest.fixture
def restored() -> Iterator[None]:
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    signal.signal(signal.SIGTERM, handler)


def test_a_sigterm_while_booting_reaches_the_workers_handler(restored: None) -> None:
    inherited: list[int] = []  # the master's handler, which a fork keeps until init_signals
    signal.signal(signal.SIGTERM, lambda signum, frame: inherited.append(signum))
    worker = Worker()
    boot_signals.hold()  # post_fork
    # The master stops meanwhile. A new worker has one thread, which the signal must then
    # reach (in this test process another thread would take a process-wide one).
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    assert inherited == [] and worker.stopped == []
    worker.init_signals()
    assert worker.stopped == [signal.SIGTERM], "delivered once the worker's handler is in place"
    assert inherited == []


def test_only_the_stop_signals_are_held(restored: None) -> None:
    boot_signals.hold()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert held >= boot_signals.STOP_SIGNALS
    assert signal.SIGCHLD not in held and signal.SIGUSR1 not in held
