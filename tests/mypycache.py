"""One mypy cache for the whole template test run, shared by the xdist workers.

Most of mypy's work on a baked project is in its third-party packages (Flask, runcycles,
pydantic, the LLM SDKs), the same in every bake: with one cache only the first run pays for
them. Runs take the cache in turn under an exclusive lock, so two mypy processes never
write it at once; the project's own modules differ between bakes and mypy re-checks them
whenever their source hash changes.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def shared_mypy_cache(factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Hold the run's mypy cache directory (created on first use) until the block ends."""
    base = factory.getbasetemp()
    # Under xdist each worker's base is a folder of the run's one shared temp folder.
    run_dir = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base
    cache = run_dir / "mypy-cache"
    cache.mkdir(exist_ok=True)
    with open(run_dir / "mypy-cache.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield cache
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
