"""File hygiene checks for pre-commit: ``python scripts/check_files.py KIND FILE...``.

KIND is ``yaml`` or ``toml`` (the file must parse) or ``size`` (at most 500 KiB). These
run from the project's own environment, so pre-commit needs nothing beyond PyPI.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import yaml  # installed with pre-commit

MAX_BYTES = 500 * 1024


def check_yaml(path: Path) -> None:
    with path.open(encoding="utf-8") as handle:
        for _ in yaml.safe_load_all(handle):
            pass


def check_toml(path: Path) -> None:
    with path.open("rb") as handle:
        tomllib.load(handle)


def check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{size} bytes, more than {MAX_BYTES}: keep large files out of git")


CHECKS: dict[str, Callable[[Path], None]] = {
    "yaml": check_yaml,
    "toml": check_toml,
    "size": check_size,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in CHECKS:
        print(f"usage: check_files.py {'|'.join(CHECKS)} FILE...", file=sys.stderr)
        return 2
    check, failed = CHECKS[argv[0]], 0
    for name in argv[1:]:
        try:
            check(Path(name))
        except Exception as exc:  # report every bad file, one line each
            print(f"{name}: {exc}".replace("\n", " "), file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
