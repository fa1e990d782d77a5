"""What the template's own tests know about the template: its folder, its prompts, bakes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parents[2]
COOKIECUTTER_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())

# Prompts that offer a fixed list of choices, with their allowed values in prompt order.
CHOICE_PROMPTS: dict[str, list[str]] = {
    key: value
    for key, value in COOKIECUTTER_JSON.items()
    if isinstance(value, list) and not key.startswith("_")
}

# The ``bake`` fixture (tests/conftest.py): answers in, path of the (cached) bake out.
Baker = Callable[..., Path]


def fresh_copy(project: Path, tmp_path: Path) -> Path:
    """A private copy of a (shared, session-cached) bake, for a test that writes into it."""
    target = tmp_path / project.name
    shutil.copytree(project, target, ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
    return target
