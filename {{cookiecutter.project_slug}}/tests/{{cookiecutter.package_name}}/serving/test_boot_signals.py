"""A stop signal that reaches a worker while it boots waits for the worker's own handler."""

from __future__ import annotations

import os
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


def test_a_worker_is_born_holding_the_stop_signals_and_the_master_takes_them_back(
    restored: None,
) -> None:
    """pre_fork in gunicorn's master: the fork copies the blocked mask to the worker, so no
    moment of its boot runs the master's handlers; the master unblocks as the fork returns."""
    boot_signals.hold_across_fork()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker, before anything of its own has run
        held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        os.write(write_end, b"held" if held >= boot_signals.STOP_SIGNALS else b"open")
        os._exit(0)
    os.close(write_end)
    in_worker = os.read(read_end, 16)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert in_worker == b"held"
    in_master = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not in_master & boot_signals.STOP_SIGNALS
    # Another fork that gunicorn's pre_fork did not precede (a re-exec) holds nothing.
    pid = os.fork()
    if pid == 0:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        os._exit(1 if held & boot_signals.STOP_SIGNALS else 0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
