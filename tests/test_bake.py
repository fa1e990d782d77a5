"""Bake every choice combination and check the output statically.

For every bake: no template syntax left over, every Python file compiles, ruff (lint and
format) passes with the generated project's own configuration, and every TOML, YAML and
JSON file parses.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from support.baking import CHOICE_PROMPTS, TEMPLATE_DIR, Baker
from support.matrix import COVER, MATRIX, row_id, uncovered

from local_extensions import default_model, model_prices, usd_to_microcents

# What an unrendered Jinja tag looks like (a user's own "{{ 7*7 }}" is not one of these).
LEFTOVER_RE = re.compile(r"\{\{\s*cookiecutter|\{%-?\s|\{#")
HOSTILE_TEXT = "Ünïcødé 名前 \"quoted\" 'single' back\\slash {{ 7*7 }} ${HOME} `tick` <b>&amp;"
HOSTILE = {
    "project_name": HOSTILE_TEXT + "\nsecond line",
    "project_slug": "hostile-app",
    "package_name": "hostile_app",
    "description": HOSTILE_TEXT + "\n\"\"\"\n'''\n# not a comment",
    "author_name": 'O\'Brien "Bob" Ångström\\',
    "author_email": "o.brien+test@example.co.uk",
}


def text_files(project: Path) -> list[Path]:
    files = []
    for path in sorted(project.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def check_static(project: Path) -> None:
    for path in text_files(project):
        text = path.read_text(encoding="utf-8")
        leftover = LEFTOVER_RE.search(text)
        assert leftover is None, f"unrendered template syntax in {path}: {leftover.group()!r}"
        if path.suffix == ".py":
            compile(text, str(path), "exec")
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in {".yaml", ".yml"}:
            list(yaml.safe_load_all(text))
        elif path.suffix == ".json":
            json.loads(text)


def run_ruff(*projects: Path) -> None:
    for command in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *map(str, projects)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"ruff {command[0]} failed:\n{result.stdout}{result.stderr}"


def test_matrix_bakes_every_value_of_every_choice() -> None:
    for name, values in CHOICE_PROMPTS.items():
        assert {row[name] for row in MATRIX} == set(values), name
    core = {(r["tenant_auth"], r["tenant_isolation"], r["llm_provider"]) for r in MATRIX}
    assert len(core) == 2 * 2 * 3


def test_cover_is_pairwise_and_starts_with_the_defaults() -> None:
    assert uncovered(COVER, CHOICE_PROMPTS) == set()
    assert COVER[0] == {name: values[0] for name, values in CHOICE_PROMPTS.items()}


@pytest.mark.parametrize("answers", MATRIX, ids=row_id)
def test_bake_is_clean(bake: Baker, answers: dict[str, str]) -> None:
    project = bake(**answers)
    check_static(project)
    run_ruff(project)
    package = project / "src" / "llm_service"
    assert (package / "__init__.py").is_file()
    provider = answers["llm_provider"]
    for sdk in ("openai", "anthropic"):
        present = (package / "llm" / f"{sdk}_provider.py").exists()
        assert present == (provider == sdk), f"{sdk} provider file present={present}"
    assert (project / "LICENSE").exists() == (answers["license"] != "Proprietary")
    assert (project / "Dockerfile").exists() == (answers["use_docker"] == "yes")
    assert (project / "compose.yaml").exists() == (answers["use_docker"] == "yes")
    assert (project / ".github").exists() == (answers["ci"] == "github")


def test_defaults_bake_with_no_input(bake: Baker) -> None:
    project = bake()
    assert project.name == "llm-service"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "llm-service"
    check_static(project)
    run_ruff(project)


def test_hostile_free_text_bakes_safely(bake: Baker) -> None:
    # Cookiecutter renders answers given with --no-input as templates themselves; wrap the
    # hostile text in a raw block so that the literal text is what reaches our files, as it
    # does when a person types it at the prompt.
    answers = {key: "{% raw %}" + value + "{% endraw %}" for key, value in HOSTILE.items()}
    project = bake(**answers)
    check_static(project)
    run_ruff(project)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    description = pyproject["project"]["description"]
    assert "{{ 7*7 }}" in description and "49" not in description
    assert "\n" not in description
    assert pyproject["project"]["authors"][0]["name"] == " ".join(HOSTILE["author_name"].split())
    readme = (project / "README.md").read_text()
    assert readme.startswith("# ")
    assert "<b>" not in readme, "HTML in free text must be escaped in the README"


# --- prompts that follow the provider -----------------------------------------------------


def baked_prices(project: Path) -> dict[str, str]:
    """MODEL and the microcent prices as the baked price module spells them."""
    text = (project / "src" / "llm_service" / "llm" / "prices.py").read_text()
    return dict(re.findall(r"^([A-Z_]+) = \"?([^\"\n]+)\"?$", text, re.MULTILINE))


def microcents(usd: str) -> str:
    return f"{usd_to_microcents(usd):_}"


@pytest.mark.parametrize("provider", CHOICE_PROMPTS["llm_provider"])
def test_the_provider_picks_the_model_and_the_model_its_prices(bake: Baker, provider: str) -> None:
    """`--no-input llm_provider=X`: a current model of X, at X's prices from the table."""
    model = default_model(provider)
    entry = model_prices(model)
    assert entry is not None and entry["provider"] == provider
    project = bake(llm_provider=provider)
    found = baked_prices(project)
    assert found["MODEL"] == model
    assert found["INPUT_MICROCENTS_PER_MILLION"] == microcents(entry["input"])
    assert found["OUTPUT_MICROCENTS_PER_MILLION"] == microcents(entry["output"])
    assert found["CACHED_INPUT_MICROCENTS_PER_MILLION"] == microcents(entry["cached_input"])
    # The cache-write price where the table has one (Anthropic's), else the input price.
    write = entry.get("cache_write", entry["input"])
    assert found["CACHE_WRITE_MICROCENTS_PER_MILLION"] == microcents(write)
    # Other models the app may run (LLM_MODEL) are priced from the provider's part of the
    # template's table, shipped in the package.
    table = json.loads((TEMPLATE_DIR / "data" / "llm-prices.json").read_text())
    shipped = json.loads((project / "src" / "llm_service" / "llm" / "prices.json").read_text())
    models = {name: row for name, row in table["models"].items() if row["provider"] == provider}
    assert shipped["models"] == models and model in models
    assert shipped["aliases"] == {a: m for a, m in table["aliases"].items() if m in models}


@pytest.mark.slow
def test_the_price_table_is_in_the_wheel(bake: Baker, tmp_path: Path) -> None:
    """Package data: an installed app (the Docker image installs the wheel) has its table."""
    project = bake()
    uv = Path(sys.executable).parent / "uv"
    env = {**os.environ, "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
    built = subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(tmp_path), str(project)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("llm_service/llm/prices.json").decode()
    assert shipped == (project / "src" / "llm_service" / "llm" / "prices.json").read_text()


def test_the_app_prices_every_call_at_the_running_model(bake: Baker) -> None:
    """pricing.cost/estimate default to the generated model's prices (tests of the default
    model use that); app code must pass the running model's (Settings.llm_prices)."""
    package = bake() / "src" / "llm_service"
    unpriced = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "pricing"
                and node.func.attr in {"cost", "estimate"}
                and not any(keyword.arg == "prices" for keyword in node.keywords)
            ):
                unpriced.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not unpriced, f"priced at the generated model, not the running one: {unpriced}"


def test_a_model_named_on_the_command_line_brings_its_own_prices(bake: Baker) -> None:
    found = baked_prices(bake(llm_provider="openai", model="gpt-4o-2024-05-13"))
    assert found["INPUT_MICROCENTS_PER_MILLION"] == microcents("5.00")
    # No published cached price: cache reads are billed at the input price.
    assert found["CACHED_INPUT_MICROCENTS_PER_MILLION"] == microcents("5.00")


def test_a_model_without_a_table_price_must_be_priced(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE_DIR),
            no_input=True,
            extra_context={"model": "acme-llm-1"},
            output_dir=str(tmp_path),
        )
    assert list(tmp_path.iterdir()) == []
    err = capfd.readouterr().err
    assert "model 'acme-llm-1' has no price in the template's price table" in err
    # Given prices are enough: the cache prices default to the input price.
    cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        extra_context={
            "model": "acme-llm-1",
            "input_price_per_million_usd": "1.25",
            "output_price_per_million_usd": "5",
        },
        output_dir=str(tmp_path),
    )
    found = baked_prices(tmp_path / "llm-service")
    assert found["MODEL"] == "acme-llm-1"
    assert found["CACHED_INPUT_MICROCENTS_PER_MILLION"] == microcents("1.25")
    assert found["CACHE_WRITE_MICROCENTS_PER_MILLION"] == microcents("1.25")
