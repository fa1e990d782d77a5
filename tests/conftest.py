"""Shared helpers for the template's own tests: bake once per answer set, reuse the result."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())

# Prompts that offer a fixed list of choices, with their allowed values in prompt order.
CHOICE_PROMPTS: dict[str, list[str]] = {
    key: value
    for key, value in COOKIECUTTER_JSON.items()
    if isinstance(value, list) and not key.startswith("_")
}

Baker = Callable[..., Path]


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


def fresh_copy(project: Path, tmp_path: Path) -> Path:
    """A private copy of a (shared, session-cached) bake, for a test that writes into it."""
    target = tmp_path / project.name
    shutil.copytree(project, target, ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
    return target
