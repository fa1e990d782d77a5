"""Run the generated projects' own test suites and type checks on a covering subset.

The subset is the defaults plus a pairwise cover of the choice prompts (see matrix.py).
Every generated suite runs in this interpreter's environment, where .ci/run installed the
union of the generated projects' dependencies once: no virtualenv per bake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Baker
from matrix import COVER, row_id

pytestmark = pytest.mark.slow

# Settings a developer's shell might carry that would leak into the generated suites.
LEAKY_PREFIXES = ("CYCLES_", "APP_ENV", "LLM_", "OPENAI_", "ANTHROPIC_", "TENANT", "FLASK_")


def clean_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env["PYTHONPATH"] = str(project / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env=clean_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("answers", COVER, ids=row_id)
def test_generated_suite_passes(bake: Baker, answers: dict[str, str]) -> None:
    project = bake(**answers)
    result = run(project, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x")
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"generated suite failed for {answers}:\n{tail}"
    assert " passed" in result.stdout


@pytest.mark.parametrize("answers", COVER, ids=row_id)
def test_generated_code_is_mypy_strict_clean(
    bake: Baker, answers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = bake(**answers)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    cache = tmp_path_factory.getbasetemp().parent / f"mypy-cache-{worker}"
    result = run(project, "-m", "mypy", "--cache-dir", str(cache), "src")
    assert result.returncode == 0, f"mypy failed for {answers}:\n{result.stdout}{result.stderr}"
