"""Scope derivation: Subject -> canonical scope identifiers.

Canonical order is tenant > workspace > app > workflow > agent > toolset; only levels present
in the subject appear, values are lower-cased, and every prefix of the path is a scope.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LEVELS: tuple[str, ...] = ("tenant", "workspace", "app", "workflow", "agent", "toolset")

#: Values must not contain the structural delimiters ':' and '/' (spec charset, which the
#: reference server enforces with 400).
VALUE_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")


def derive_scopes(subject: Mapping[str, object]) -> list[str]:
    """Every prefix of the canonical scope path, shortest first."""
    scopes: list[str] = []
    path = ""
    for level in LEVELS:
        value = subject.get(level)
        if isinstance(value, str) and value:
            segment = f"{level}:{value.lower()}"
            path = f"{path}/{segment}" if path else segment
            scopes.append(path)
    return scopes


def leaf(scope_path: str) -> str:
    """The last segment: Balance.scope is the leaf identifier, scope_path the full path."""
    return scope_path.rsplit("/", 1)[-1]


def parse_scope(scope: str) -> list[tuple[str, str]]:
    """Split and validate an operator-supplied scope string such as ``tenant:a/workspace:b``.

    Raises ValueError when a segment is malformed or levels are out of canonical order.
    """
    segments: list[tuple[str, str]] = []
    last_index = -1
    for raw in scope.split("/"):
        level, sep, value = raw.partition(":")
        level = level.strip().lower()
        value = value.strip()
        if not sep or level not in LEVELS or not VALUE_PATTERN.match(value):
            raise ValueError(f"malformed scope segment {raw!r}")
        index = LEVELS.index(level)
        if index <= last_index:
            raise ValueError("scope levels must follow tenant>workspace>app>workflow>agent>toolset")
        last_index = index
        segments.append((level, value.lower()))
    return segments


def normalize_scope(scope: str) -> str:
    """Canonical (lower-cased) form of an operator-supplied scope; must start with a tenant."""
    segments = parse_scope(scope)
    if segments[0][0] != "tenant":
        raise ValueError("scope must start with tenant:<id>")
    return "/".join(f"{level}:{value}" for level, value in segments)


def has_segment(scope_path: str, segment: str) -> bool:
    """Exact segment match, so ``tenant:acme`` does not match ``tenant:acme-corp``."""
    return f"/{segment}/" in f"/{scope_path}/"
