"""Jinja filters the template uses to put prompt answers safely into generated files.

Cookiecutter loads this module from the template root (``_extensions`` in cookiecutter.json).
Free-text answers (name, description, author) may contain quotes, backslashes, newlines,
braces or non-ASCII; each filter below escapes for exactly one target syntax.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jinja2.ext import Extension

MICROCENTS_PER_USD = 100_000_000

# TOML basic strings forbid raw control characters (except tab), quotes and backslashes.
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_str(value: object) -> str:
    """Quote ``value`` as a TOML basic string."""
    out = []
    for char in str(value):
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def one_line(value: object) -> str:
    """Collapse all whitespace runs (newlines included) into single spaces."""
    return " ".join(str(value).split())


# Characters that start Markdown or HTML syntax when they appear in running text.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")


def md_text(value: object) -> str:
    """Escape ``value`` for inline Markdown text on a single line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(value))


def usd_to_microcents(value: object) -> int:
    """Convert a dollar amount such as ``"2.50"`` to integer USD microcents, exactly.

    The pre-generation hook has already rejected anything that does not convert exactly.
    """
    try:
        microcents = Decimal(str(value).strip()) * MICROCENTS_PER_USD
    except InvalidOperation as err:
        raise ValueError(f"not a decimal number: {value!r}") from err
    if microcents != microcents.to_integral_value():
        raise ValueError(f"more than 8 decimal places: {value!r}")
    return int(microcents)


def py_int(value: int) -> str:
    """Format an integer as a Python literal with ``_`` thousands separators."""
    return f"{int(value):_}"


class TemplateFilters(Extension):
    """Registers the filters above on the cookiecutter Jinja environment."""

    def __init__(self, environment):  # type: ignore[no-untyped-def]
        super().__init__(environment)
        environment.filters.update(
            toml_str=toml_str,
            one_line=one_line,
            md_text=md_text,
            usd_to_microcents=usd_to_microcents,
            py_int=py_int,
        )
