"""Run the generated projects' own test suites and type checks on a covering subset.

The subset is the defaults plus a pairwise cover of the choice prompts (see support/matrix.py).
Every generated suite runs in this interpreter's environment, where .ci/run installed the
union of the generated projects' dependencies once: no virtualenv per bake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.baking import Baker, fresh_copy
from support.matrix import COVER, row_id
from support.runcache import hypothesis_storage, shared_mypy_cache

pytestmark = pytest.mark.slow

# This environment's own pytest plugins that a generated project does not use; loading
# them costs seconds per run.
UNUSED_PLUGINS = ("-p", "no:cookies", "-p", "no:xdist", "-p", "no:xdist.looponfail")
# The embedded server (src/localcycles) and its tests (tests/localcycles) are copied
# verbatim, without rendering, so they behave the same in every bake: run them on the defaults
# only. Every other test file differs between bakes and runs on every row.
VERBATIM_TESTS = "tests/localcycles"

# Settings a developer's shell might carry that would leak into the generated suites.
LEAKY_PREFIXES = (
    "CYCLES_",
    "APP_ENV",
    "LLM_",
    "OPENAI_",
    "ANTHROPIC_",
    "TENANT",
    "FLASK_",
    "HYPOTHESIS_",
)


def clean_env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env["PYTHONPATH"] = str(project / "src")
    env.update(extra)
    return env


def run(
    project: Path, *args: str, timeout: float = 1200, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env=clean_env(project, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Prices that are not whole microcents per token, so the round-up rule matters: a pricing
# module that rounds down (or drifts through floats) fails this row's suite.
FRACTIONAL_PRICES = {
    "tenant_auth": "trusted_header",
    "tenant_isolation": "workspace",
    "llm_provider": "anthropic",
    "input_price_per_million_usd": "0.075",
    "output_price_per_million_usd": "0.30",
    "cached_input_price_per_million_usd": "0.0075",
}
SUITE_ROWS = [*COVER, FRACTIONAL_PRICES]


@pytest.mark.parametrize("answers", SUITE_ROWS, ids=row_id)
def test_generated_suite_passes(
    bake: Baker,
    answers: dict[str, str],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A private copy: the suite writes bytecode next to its sources, and the bake is shared.
    project = fresh_copy(bake(**answers), tmp_path)
    if answers == COVER[0]:
        skip, profile = [], "thorough"
    else:
        # The property tests' strategies are the same in every bake (only the tenancy they
        # drive differs): full example counts on the defaults, a fifth elsewhere.
        skip, profile = [f"--ignore={VERBATIM_TESTS}"], "quick"
    result = run(
        project,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *UNUSED_PLUGINS,
        *skip,
        # Bytecode on (even where the shell turned it off): pytest then keeps its
        # assertion-rewritten copies of the plugins' packages (Hypothesis, anyio: ~140
        # modules, ~2 s per suite) in the virtualenv, and only the first suite pays.
        PYTHONDONTWRITEBYTECODE="",
        HYPOTHESIS_PROFILE=profile,
        HYPOTHESIS_STORAGE_DIRECTORY=str(hypothesis_storage(tmp_path_factory)),
    )
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"generated suite failed for {answers}:\n{tail}"
    assert " passed" in result.stdout


@pytest.mark.parametrize("answers", COVER, ids=row_id)
def test_generated_code_is_mypy_strict_clean(
    bake: Baker, answers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = bake(**answers)
    with shared_mypy_cache(tmp_path_factory) as cache:
        result = run(project, "-m", "mypy", "--cache-dir", str(cache), "src")
    assert result.returncode == 0, f"mypy failed for {answers}:\n{result.stdout}{result.stderr}"
