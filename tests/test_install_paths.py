"""A fresh bake as a newcomer meets it: a git repository pre-commit runs in at once, and the
fast install path (uv) as the READMEs give it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.baking import Baker, fresh_copy

VENV_BIN = Path(sys.executable).parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The outer test environment minus what would point tools at it, this venv's bin first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH"} and not k.startswith(("CYCLES_", "FLASK_"))
    }
    return {**env, "PATH": os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]), **extra}


@needs_git
def test_a_fresh_bake_is_a_repository_with_every_file_staged(bake: Baker) -> None:
    project = bake()
    assert (project / ".git").is_dir()
    staged = set(run(["git", "diff", "--cached", "--name-only"], project).stdout.split())
    assert {"pyproject.toml", "README.md", ".pre-commit-config.yaml"} <= staged
    assert "src/llm_service/__init__.py" in staged
    untracked = run(["git", "ls-files", "--others", "--exclude-standard"], project).stdout
    assert untracked == "", "every file git does not ignore is staged"
    assert run(["git", "rev-parse", "--verify", "HEAD"], project).returncode != 0


@needs_git
def test_pre_commit_runs_on_a_fresh_bake(bake: Baker, tmp_path: Path) -> None:
    """The README's `pre-commit run --all-files` needs a repository: it is there straight
    after generation (one cheap hook here; test_production runs them all)."""
    project = fresh_copy(bake(), tmp_path)
    env = clean_env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    command = [str(VENV_BIN / "pre-commit"), "run", "check-toml", "--all-files"]
    result = run(command, project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TOML parses" in result.stdout and "Passed" in result.stdout


@pytest.mark.slow
def test_uv_path_installs_and_tests_the_default_bake(bake: Baker, tmp_path: Path) -> None:
    """`uv sync --extra dev` then `uv run ...`, as the generated README says. uv's own cache
    (outside the run) keeps repeated runs from downloading again."""
    project = fresh_copy(bake(), tmp_path)
    uv = str(VENV_BIN / "uv")
    env = clean_env(UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never")
    synced = run([uv, "sync", "--extra", "dev"], project, env, timeout=600)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert (project / "uv.lock").is_file() and (project / ".venv").is_dir()
    tests = run(
        [
            uv,
            "run",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/llm_service/budget/test_pricing.py",
        ],
        project,
        {**env, "HYPOTHESIS_PROFILE": "quick"},
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout
    routes = run([uv, "run", "flask", "--app", "llm_service", "routes"], project, env)
    assert routes.returncode == 0, routes.stdout + routes.stderr
    assert "/chat" in routes.stdout
