"""LLM providers that tests can watch or hold back (the offline fake underneath)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from {{ cookiecutter.package_name }}.llm import Completion, FakeProvider, StreamProgress


class CountingProvider(FakeProvider):
    """The fake provider, counting its calls; ``gate`` (if set) holds each call until set.

    A held call lets a test act while a request is between its reservation and its commit.
    """

    def __init__(self, *, gate: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.started = threading.Semaphore(0)  # released once per call that began
        self.gate = gate
        self._lock = threading.Lock()

    def _begin(self) -> None:
        with self._lock:
            self.calls += 1
        self.started.release()
        if self.gate is not None:
            self.gate.wait()

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        self._begin()
        return super().complete(prompt=prompt, max_tokens=max_tokens, system=system)

    def stream(
        self,
        *,
        prompt: str,
        max_tokens: int,
        progress: StreamProgress,
        system: str | None = None,
    ) -> Iterator[str]:
        self._begin()
        return super().stream(
            prompt=prompt, max_tokens=max_tokens, progress=progress, system=system
        )
