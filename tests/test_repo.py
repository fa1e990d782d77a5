"""The template repository's own promises: CI runs the README's test command."""

from __future__ import annotations

import re

from conftest import TEMPLATE_DIR


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
