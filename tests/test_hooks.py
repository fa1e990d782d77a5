"""The generation hooks: bad answers are refused before anything is written."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from hypothesis import given
from hypothesis import strategies as st
from support.baking import CHOICE_PROMPTS, COOKIECUTTER_JSON, TEMPLATE_DIR, Baker


def load_hook(name: str) -> ModuleType:
    # The hooks are valid Python before rendering: the answers sit in a raw string.
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")


@pytest.fixture(scope="module")
def baked_prices(bake: Baker) -> ModuleType:
    """The generated app's llm/prices.py (stdlib only: it loads on its own)."""
    path = bake() / "src" / "llm_service" / "llm" / "prices.py"
    spec = importlib.util.spec_from_file_location("baked_llm_prices", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


VALID: dict[str, str] = {
    "project_name": "LLM Service",
    "project_slug": "llm-service",
    "package_name": "llm_service",
    "description": "d",
    "author_name": "A",
    "author_email": "a@example.com",
    "license": "MIT",
    "llm_provider": "openai",
    "model": "gpt-5.4-mini",
    "input_price_per_million_usd": "0.75",
    "output_price_per_million_usd": "4.50",
    "cached_input_price_per_million_usd": "0.075",
    "cache_write_price_per_million_usd": "0.75",
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
    ("cached_input_price_per_million_usd", "abc"),
    ("cached_input_price_per_million_usd", "0.76"),
    ("cache_write_price_per_million_usd", "abc"),
    ("cache_write_price_per_million_usd", "inf"),
    ("cache_write_price_per_million_usd", "-1"),
    ("cache_write_price_per_million_usd", "0.74"),
    ("output_price_per_million_usd", ""),
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


PRICE_TEXTS = [
    *("0", "0.075", "2.50", "10000", "0.00000001", "10000.00000000", " 3 ", "007"),
    *("", "-1", "abc", "NaN", "inf", "1e3", "0.123456789", "10000.01", "$10", "1.", ".5"),
    *("1,5", "1.000000000", "\u0663", "+1", "1_000", "0x10", " ", "12.3.4"),
]


@given(st.one_of(st.sampled_from(PRICE_TEXTS), st.text(alphabet="0123456789. e-+$", max_size=14)))
def test_the_app_checks_price_settings_as_the_prompts_check_prices(
    baked_prices: ModuleType, text: str
) -> None:
    """LLM_*_PRICE_PER_MILLION_USD accept exactly the price answers the hook accepts."""
    try:
        microcents = baked_prices.usd_per_million(text)
    except ValueError:
        assert pre_gen.check_price(text) is not None or not text.strip()
        return
    assert pre_gen.check_price(text) is None
    assert microcents == int(Decimal(text.strip()) * 100_000_000)


def test_choices_are_the_ones_cookiecutter_json_offers() -> None:
    assert {k: list(v) for k, v in pre_gen.CHOICES.items()} == CHOICE_PROMPTS
    assert set(pre_gen.CHECKS) | set(CHOICE_PROMPTS) == {
        key for key in COOKIECUTTER_JSON if not key.startswith("_") and key != "description"
    }


def test_a_missing_price_says_the_model_is_not_in_the_table() -> None:
    answers = {**VALID, "model": "my-model", "input_price_per_million_usd": ""}
    for field in pre_gen.PRICE_FIELDS:
        answers[field] = ""
    problems = pre_gen.validate(answers)
    # The cache prices follow the input price: one message for the three.
    assert [p.split(":")[0] for p in problems] == [
        "input_price_per_million_usd",
        "output_price_per_million_usd",
    ]
    for problem in problems:
        assert "model 'my-model' has no price in the template's price table" in problem
        assert "must be given" in problem


def test_a_cached_price_above_the_input_price_is_refused() -> None:
    problems = pre_gen.validate({**VALID, "cached_input_price_per_million_usd": "0.76"})
    assert problems == [
        "cached_input_price_per_million_usd: '0.76' must not exceed the input price (0.75)"
    ]


def test_a_cache_write_price_below_the_input_price_is_refused() -> None:
    problems = pre_gen.validate({**VALID, "cache_write_price_per_million_usd": "0.74"})
    assert problems == [
        "cache_write_price_per_million_usd: '0.74' must not be below the input price (0.75)"
    ]
    assert pre_gen.validate({**VALID, "cache_write_price_per_million_usd": "0.9375"}) == []


@pytest.mark.parametrize("slug", ["flask", "json", "test", "runcycles"])
def test_a_slug_that_gives_a_bad_package_name_is_reported_as_the_slug(slug: str) -> None:
    problems = pre_gen.validate({**VALID, "project_slug": slug, "package_name": slug})
    assert len(problems) == 1
    assert problems[0].startswith(f"project_slug: {slug!r} gives the package name {slug!r}, ")
    assert problems[0].endswith("choose another project_slug, or set package_name")


def test_an_invalid_slug_is_reported_once() -> None:
    problems = pre_gen.validate({**VALID, "project_slug": "My App", "package_name": "My App"})
    assert [p.split(":")[0] for p in problems] == ["project_slug"]


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
    lines = capsys.readouterr().out.splitlines()
    assert "  cd llm-service" in lines
    assert "  uv sync --extra dev" in [line.split("#")[0].rstrip() for line in lines]
    commands = [line.split("#")[0].strip() for line in lines]
    for command in ("uv run flask --app llm_service run", "uv run pytest", "pytest"):
        assert command in commands
    # The generated README's spelling: python3 (plain `python` is missing on many systems).
    assert "python3 -m venv .venv && . .venv/bin/activate" in commands
    assert not any(c.startswith("python -m") for c in commands)
    # Every comment starts in the same column.
    columns = {line.index("#") for line in lines if "#" in line}
    assert len(columns) == 1, lines


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def fake_project(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "README.md").write_text("# x\n")
    return root


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_post_gen_starts_a_repository_with_everything_staged_and_nothing_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = fake_project(tmp_path / "project")
    for _ in range(2):  # idempotent: a second run finds the repository and leaves it
        assert post_gen.main(json.dumps(VALID), project) == 0
    assert git(project, "rev-parse", "--show-toplevel").stdout.strip() == str(project)
    staged = git(project, "diff", "--cached", "--name-only").stdout.split()
    assert staged == ["README.md", "src/pkg/__init__.py"]
    assert git(project, "rev-parse", "--verify", "HEAD").returncode != 0, "nothing committed"
    out = capsys.readouterr().out
    assert "initialised a git repository" in out and "inside a git repository already" in out


@needs_git
def test_post_gen_leaves_an_enclosing_repository_alone(tmp_path: Path) -> None:
    assert git(tmp_path, "init", "-q").returncode == 0
    project = fake_project(tmp_path / "project")
    assert post_gen.main(json.dumps(VALID), project) == 0
    assert not (project / ".git").exists()
    assert git(tmp_path, "diff", "--cached", "--name-only").stdout == "", "nothing staged"


@needs_git
def test_post_gen_under_cruft_makes_no_repository(tmp_path: Path) -> None:
    """cruft update diffs two fresh bakes: a .git in them would end up in its patch."""
    project = fake_project(tmp_path / "project")
    assert post_gen.main(json.dumps({**VALID, "_commit": "abc123"}), project) == 0
    assert not (project / ".git").exists()


def test_post_gen_without_git_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    project = fake_project(tmp_path / "project")
    assert post_gen.main(json.dumps(VALID), project) == 0
    assert not (project / ".git").exists()
    assert "git is not installed: run `git init && git add -A`" in capsys.readouterr().out


@needs_git
def test_post_gen_ignores_a_git_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from inside a git hook, GIT_DIR points elsewhere: the new repository is still here."""
    other = tmp_path / "other"
    other.mkdir()
    assert git(other, "init", "-q").returncode == 0
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    project = fake_project(tmp_path / "project")
    assert post_gen.main(json.dumps(VALID), project) == 0
    monkeypatch.delenv("GIT_DIR")
    assert (project / ".git").is_dir()
    assert git(other, "diff", "--cached", "--name-only").stdout == ""
