"""The template repository's own promises: CI runs the README's test command, the README
leads with what works, the price table is generated."""

from __future__ import annotations

import datetime
import json
import re
from decimal import Decimal

from support.baking import CHOICE_PROMPTS, TEMPLATE_DIR


def fenced_commands(markdown: str, heading: str) -> list[str]:
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (TEMPLATE_DIR / "README.md").read_text()
    commands = fenced_commands(readme, "Test the template")
    assert len(commands) == 1
    ci_lines = (TEMPLATE_DIR / ".ci" / "run").read_text().splitlines()
    assert commands[0] in ci_lines


def test_readme_leads_with_a_command_that_works_from_a_checkout() -> None:
    readme = (TEMPLATE_DIR / "README.md").read_text()
    commands = fenced_commands(readme, "Generate a project and run it")
    generate = [c for c in commands if "cookiecutter" in c]
    assert generate and all(
        "gh:" not in c and "cookiecutter --no-input flask-cycles" in c for c in generate
    )
    assert "uvx cookiecutter" in generate[0], "the fast path comes first"
    assert "2-core machine" not in readme


def test_price_table_is_what_the_script_makes_from_the_pinned_package() -> None:
    """Nobody edits data/llm-prices.json by hand, and requirements-dev.txt pins the
    genai-prices version the table came from."""
    from scripts import update_prices

    shipped_text = update_prices.TABLE.read_text(encoding="utf-8")
    shipped = json.loads(shipped_text)
    pinned = re.search(
        r"^genai-prices==(\S+)$", (TEMPLATE_DIR / "requirements-dev.txt").read_text(), re.MULTILINE
    )
    assert pinned and pinned.group(1) == shipped["genai_prices_version"]
    made = update_prices.build_table(datetime.date.fromisoformat(shipped["generated_on"]))
    assert update_prices.render(made) == shipped_text
    licence = (TEMPLATE_DIR / "data" / "LICENSE-genai-prices").read_text()
    assert "MIT" in licence and "Pydantic Services Inc." in licence


def test_price_table_defaults_are_flat_priced_models_of_their_provider() -> None:
    table = json.loads((TEMPLATE_DIR / "data" / "llm-prices.json").read_text())
    assert set(table["defaults"]) == set(CHOICE_PROMPTS["llm_provider"])
    for provider, model in table["defaults"].items():
        entry = table["models"][model]
        assert entry["provider"] == provider
        assert "higher_rate_above_input_tokens" not in entry
    for name, entry in table["models"].items():
        for kind in ("input", "output", "cached_input", "cache_write"):
            if kind in entry:
                assert re.fullmatch(r"[0-9]+\.[0-9]{2,8}", entry[kind]), (name, kind)
        assert Decimal(entry.get("cached_input", entry["input"])) <= Decimal(entry["input"])
        assert Decimal(entry.get("cache_write", entry["input"])) >= Decimal(entry["input"])
    assert all(target in table["models"] for target in table["aliases"].values())
