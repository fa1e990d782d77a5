"""Validate every cookiecutter answer before anything is written.

Each problem is reported on one line naming the prompt, the value given and what is
allowed; any problem exits with status 1, and cookiecutter then removes the output folder.
"""

from __future__ import annotations

import json
import keyword
import math
import re
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

# Rendered by cookiecutter; ``tojson`` escapes quotes, so the raw string cannot be broken.
ANSWERS = r"""{{ cookiecutter | tojson }}"""

MAX_PRICE_USD_PER_MILLION = Decimal(10_000)
PRICE_DECIMAL_PLACES = 8  # prices are stored as integer USD microcents ($1 = 10^8)
MAX_MODEL_LENGTH = 256
MAX_SUBJECT_LENGTH = 128
# Long names push generated import lines past the line length; 40 is plenty.
MAX_NAME_LENGTH = 40

CHOICES = {
    "license": ("MIT", "Apache-2.0", "Proprietary"),
    "llm_provider": ("openai", "anthropic", "fake"),
    "tenant_auth": ("api_key", "trusted_header"),
    "tenant_isolation": ("workspace", "tenant"),
    "use_docker": ("yes", "no"),
    "ci": ("github", "none"),
}

# Top-level modules the generated project imports (or its tools install); a package with
# one of these names would shadow it.
DEPENDENCY_MODULES = frozenset(
    {
        "anthropic", "blinker", "click", "conftest", "dotenv", "flask", "gunicorn", "httpx",
        "httpx2", "hypothesis", "itsdangerous", "jinja2", "markupsafe", "mypy", "openai",
        "pydantic", "pytest", "requests", "ruff", "runcycles", "src", "test", "tests",
        "werkzeug",
    }
)  # fmt: skip

SLUG_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
PACKAGE_RE = re.compile(r"[a-z][a-z0-9_]*")
EMAIL_RE = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;.]+")
MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
SUBJECT_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def check_not_blank(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def check_slug(value: str) -> str | None:
    if not SLUG_RE.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        return (
            f"must be 1-{MAX_NAME_LENGTH} lowercase letters, digits and single hyphens, "
            "starting with a letter"
        )
    return None


def check_package(value: str) -> str | None:
    if not PACKAGE_RE.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        return f"must be a lowercase Python identifier of at most {MAX_NAME_LENGTH} characters"
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return "is a Python keyword"
    if value in sys.stdlib_module_names:
        return "shadows the Python standard library module of that name"
    if value in DEPENDENCY_MODULES:
        return "shadows a module the generated project depends on"
    return None


def check_email(value: str) -> str | None:
    return None if EMAIL_RE.fullmatch(value) else "must be an email address like you@example.com"


def check_model(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_MODEL_LENGTH:
        return f"must be at most {MAX_MODEL_LENGTH} characters"
    if not MODEL_RE.fullmatch(value):
        return "may contain only letters, digits and . _ : / @ + - (no spaces or quotes)"
    return None


def check_price(value: str) -> str | None:
    text = value.strip()
    if not DECIMAL_RE.fullmatch(text):
        return "must be a non-negative decimal number of US dollars per million tokens, like 2.50"
    try:
        price = Decimal(text)
    except InvalidOperation:  # pragma: no cover - DECIMAL_RE admits only valid decimals
        return "must be a decimal number"
    if not math.isfinite(price):  # pragma: no cover - likewise
        return "must be finite"
    if -price.as_tuple().exponent > PRICE_DECIMAL_PLACES:  # type: ignore[operator]
        return f"may have at most {PRICE_DECIMAL_PLACES} decimal places (1 USD microcent)"
    if price > MAX_PRICE_USD_PER_MILLION:
        return f"must be at most {MAX_PRICE_USD_PER_MILLION} USD per million tokens"
    return None


def check_subject(value: str) -> str | None:
    if not SUBJECT_RE.fullmatch(value) or len(value) > MAX_SUBJECT_LENGTH:
        return (
            f"must be 1-{MAX_SUBJECT_LENGTH} lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return None


CHECKS: dict[str, Callable[[str], str | None]] = {
    "project_name": check_not_blank,
    "project_slug": check_slug,
    "package_name": check_package,
    "author_name": check_not_blank,
    "author_email": check_email,
    "model": check_model,
    "input_price_per_million_usd": check_price,
    "output_price_per_million_usd": check_price,
    "cached_input_price_per_million_usd": check_price,
    "cache_write_price_per_million_usd": check_price,
    "cycles_app": check_subject,
}
PRICE_FIELDS = (
    "input_price_per_million_usd",
    "output_price_per_million_usd",
    "cached_input_price_per_million_usd",
    "cache_write_price_per_million_usd",
)
# Prices that default to the input price: no message of their own when it is missing.
FOLLOW_INPUT = ("cached_input_price_per_million_usd", "cache_write_price_per_million_usd")


def reason_for(field: str, value: str, answers: Mapping[str, object]) -> str | None:
    """Why ``value`` is not a valid answer for ``field`` (None: it is), given the others."""
    if field in PRICE_FIELDS and not value.strip():
        # The price prompts default from the template's price table; an empty default
        # means the model is not in it, and a price is never guessed.
        return (
            f"is empty: model {answers.get('model')!r} has no price in the template's price "
            "table (data/llm-prices.json), so it must be given, in US dollars per million "
            "tokens like 2.50"
        )
    reason = CHECKS[field](value)
    if reason or field not in FOLLOW_INPUT:
        return reason
    full_price = answers.get("input_price_per_million_usd")
    if not (isinstance(full_price, str) and check_price(full_price) is None):
        return None
    price, full = Decimal(value.strip()), Decimal(full_price.strip())
    # The reservation prices every input token at the full rate: an upper bound only
    # while a cache read costs no more than that.
    if field == "cached_input_price_per_million_usd" and price > full:
        return f"must not exceed the input price ({full_price.strip()})"
    # Every provider bills a cache write above the base input price (Anthropic 1.25x):
    # a lower figure is a slip (the cache-read price, say) that would undercharge.
    if field == "cache_write_price_per_million_usd" and price < full:
        return f"must not be below the input price ({full_price.strip()})"
    return None


def derived_package(slug: str) -> str:
    """The package name cookiecutter.json derives from a project slug."""
    return slug.replace("-", "_")


def validate(answers: Mapping[str, object]) -> list[str]:
    """Return one message per invalid answer; an empty list means all are valid."""
    problems = []
    for field, allowed in CHOICES.items():
        value = answers.get(field)
        if value not in allowed:
            problems.append(f"{field}: {value!r} is not one of {', '.join(allowed)}")
    # The cache prices default to the input price: one message when all are missing.
    follows_input = not str(answers.get("input_price_per_million_usd", "")).strip()
    for field in CHECKS:
        value = answers.get(field)
        if not isinstance(value, str):
            problems.append(f"{field}: {value!r} must be text")
            continue
        reason = reason_for(field, value, answers)
        if not reason or (field in FOLLOW_INPUT and follows_input):
            continue
        slug = answers.get("project_slug")
        if field == "package_name" and isinstance(slug, str) and value == derived_package(slug):
            # The package name came from the slug: name the answer the user typed (once).
            if check_slug(slug) is None:
                problems.append(
                    f"project_slug: {slug!r} gives the package name {value!r}, which "
                    f"{reason}: choose another project_slug, or set package_name"
                )
        else:
            problems.append(f"{field}: {value!r} {reason}")
    return problems


def main(raw_answers: str) -> int:
    problems = validate(json.loads(raw_answers))
    for problem in problems:
        print(f"ERROR: invalid answer for {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(ANSWERS))
