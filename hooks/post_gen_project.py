"""Finish a freshly generated project: tidy optional folders, print the next steps.

Offline and idempotent: cruft runs this hook again on every ``cruft update``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ANSWERS = r"""{{ cookiecutter | tojson }}"""


def remove_empty_dirs(root: Path) -> None:
    """Remove folders left empty by optional files whose names rendered empty."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if ".git" not in folder.parts and not any(folder.iterdir()):
            folder.rmdir()


def next_steps(answers: dict[str, str]) -> str:
    slug, package = answers["project_slug"], answers["package_name"]
    return "\n".join(
        [
            f"Created {slug}. Next steps:",
            f"  cd {slug}",
            "  python -m venv .venv && . .venv/bin/activate",
            "  pip install -e '.[dev]'",
            f"  flask --app {package} run      # embedded Cycles ledger, offline fake LLM",
            "  pytest                          # the project's own tests",
        ]
    )


def main(raw_answers: str, project_dir: Path) -> int:
    remove_empty_dirs(project_dir)
    print(next_steps(json.loads(raw_answers)))
    return 0


if __name__ == "__main__":
    sys.exit(main(ANSWERS, Path.cwd()))
