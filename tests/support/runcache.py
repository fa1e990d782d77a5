"""Caches shared by the whole template test run (all xdist workers): mypy's and Hypothesis'.

Most of mypy's work on a baked project is in its third-party packages (Flask, runcycles,
pydantic, the LLM SDKs), the same in every bake: with one cache only the first run pays for
them. Runs take the mypy cache in turn under an exclusive lock, so two mypy processes never
write it at once; the project's own modules differ between bakes and mypy re-checks them
whenever their source hash changes.

Hypothesis keeps a Unicode character map (a few seconds to build) in its storage directory,
by default `.hypothesis/` in the working directory, so each fresh bake would build it again.
It writes that file atomically, so the generated suites can share one directory unlocked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def run_dir(factory: pytest.TempPathFactory) -> Path:
    """The temp folder of this whole run (under xdist, the parent of the workers' ones)."""
    base = factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def hypothesis_storage(factory: pytest.TempPathFactory) -> Path:
    """The run's one Hypothesis storage directory (HYPOTHESIS_STORAGE_DIRECTORY)."""
    storage = run_dir(factory) / "hypothesis"
    storage.mkdir(exist_ok=True)
    return storage


@contextmanager
def shared_mypy_cache(factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Hold the run's mypy cache directory (created on first use) until the block ends."""
    shared = run_dir(factory)
    cache = shared / "mypy-cache"
    cache.mkdir(exist_ok=True)
    with open(shared / "mypy-cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield cache
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
