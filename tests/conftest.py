"""Fixtures for the template's own tests: bake once per answer set, reuse the result.

Plain helpers (the template's folder and prompts, the answer matrix, local HTTP, shared
caches) live in tests/support/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.baking import Baker


@pytest.fixture(scope="session")
def bake(cookies_session: Any) -> Iterator[Baker]:
    """Bake the template with the given answers (cached per answer set); return the project path."""
    cache: dict[str, Path] = {}

    def _bake(**answers: str) -> Path:
        key = json.dumps(answers, sort_keys=True)
        if key not in cache:
            result = cookies_session.bake(extra_context=answers)
            assert result.exception is None, f"bake failed for {answers}: {result.exception!r}"
            assert result.exit_code == 0
            cache[key] = Path(result.project_path)
        return cache[key]

    yield _bake
