"""The generation hooks: bad answers are refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TEMPLATE_DIR
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter


def load_hook(name: str) -> ModuleType:
    # The hooks are valid Python before rendering: the answers sit in a raw string.
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")

VALID: dict[str, str] = {
    "project_name": "LLM Service",
    "project_slug": "llm-service",
    "package_name": "llm_service",
    "description": "d",
    "author_name": "A",
    "author_email": "a@example.com",
    "license": "MIT",
    "llm_provider": "openai",
    "model": "gpt-4o",
    "input_price_per_million_usd": "2.50",
    "output_price_per_million_usd": "10.00",
    "tenant_auth": "api_key",
    "tenant_isolation": "workspace",
    "cycles_app": "llm-service",
    "use_docker": "yes",
    "ci": "github",
}

BAD_ANSWERS = [
    ("project_slug", "My Project"),
    ("project_slug", "-leading-hyphen"),
    ("project_slug", "x" * 41),
    ("package_name", "x" * 41),
    ("package_name", "My-Package"),
    ("package_name", "class"),
    ("package_name", "match"),
    ("package_name", "json"),
    ("package_name", "test"),
    ("package_name", "flask"),
    ("package_name", "runcycles"),
    ("package_name", "1abc"),
    ("input_price_per_million_usd", ""),
    ("input_price_per_million_usd", "-1"),
    ("input_price_per_million_usd", "abc"),
    ("input_price_per_million_usd", "NaN"),
    ("input_price_per_million_usd", "inf"),
    ("input_price_per_million_usd", "1e3"),
    ("input_price_per_million_usd", "0.123456789"),
    ("output_price_per_million_usd", "10000.01"),
    ("output_price_per_million_usd", "$10"),
    ("model", ""),
    ("model", "m" * 257),
    ("model", 'gpt"4'),
    ("model", "gpt 4"),
    ("author_email", "not-an-email"),
    ("author_email", "a@b"),
    ("author_email", "a b@example.com"),
    ("project_name", "   "),
    ("cycles_app", "Has Spaces"),
    ("license", "GPL"),
]


def test_valid_answers_pass() -> None:
    assert pre_gen.validate(VALID) == []


@pytest.mark.parametrize(("field", "value"), BAD_ANSWERS)
def test_each_bad_answer_is_named_with_its_value(field: str, value: str) -> None:
    problems = pre_gen.validate({**VALID, field: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{field}: {value!r}")


@pytest.mark.parametrize(
    "price", ["0", "0.075", "2.50", "10000", "0.00000001", "10000.00000000", " 3 "]
)
def test_edge_prices_are_accepted(price: str) -> None:
    assert pre_gen.check_price(price) is None


def test_main_prints_one_line_per_problem_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    answers = {**VALID, "package_name": "json", "model": ""}
    assert pre_gen.main(json.dumps(answers)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("ERROR: invalid answer for ") for line in lines)
    assert pre_gen.main(json.dumps(VALID)) == 0


# Answers cookiecutter refuses itself before any hook runs: a blank name gives an empty
# folder name, and a choice outside its list is a ValueError naming the choices.
REFUSED_BY_COOKIECUTTER = {"project_name", "license"}
BAKED_BAD_ANSWERS = [(f, v) for f, v in BAD_ANSWERS if f not in REFUSED_BY_COOKIECUTTER][::2]


@pytest.mark.parametrize(("field", "value"), BAKED_BAD_ANSWERS)
def test_bad_answer_fails_the_bake_and_leaves_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], field: str, value: str
) -> None:
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE_DIR), no_input=True, extra_context={field: value}, output_dir=str(tmp_path)
        )
    assert list(tmp_path.iterdir()) == []
    assert f"invalid answer for {field}: {value!r}" in capfd.readouterr().err


def test_post_gen_removes_empty_folders_and_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    for _ in range(2):
        assert post_gen.main(json.dumps(VALID), tmp_path) == 0
    assert not (tmp_path / ".github").exists()
    assert (tmp_path / "src" / "pkg" / "__init__.py").exists()


def test_post_gen_prints_the_next_steps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    post_gen.main(json.dumps(VALID), tmp_path)
    out = capsys.readouterr().out
    assert "cd llm-service" in out
    assert "flask --app llm_service run" in out
    assert "pytest" in out
