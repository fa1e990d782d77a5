"""Reading settings one variable at a time, noting every problem (named) instead of stopping.

A read that finds a problem returns a valid fallback (the default) so reading goes on;
checks that combine variables skip any variable already at fault, so every line of the
final :class:`~.config.ConfigError` is a real problem rather than a consequence of another
one. Messages never quote a value that may hold a secret.

Also the parts that the per-answer readers (``config_callers.py``, ``config_tenancy.py``)
hand to ``config_reader.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .config import TENANT_ID_RE, TENANT_ID_RULE, URL_RE, URL_RULE

T = TypeVar("T")
Choice = TypeVar("Choice", bound=str)

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def quoted(value: str) -> str:
    """A non-secret value as it appears in a message: quoted, on one line, not too long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def number_text(value: float) -> str:
    """A parsed number as it appears in a message (a 4,000-digit one is cut short)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "..."


class ValueReader:
    """Reads variables of ``env``; ``problems`` lists what was wrong, one line each."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.at_fault: set[str] = set()

    def note(self, name: str, problem: str) -> None:
        self.problems.append(problem)
        self.at_fault.add(name)

    def fine(self, *names: str) -> bool:
        """True when none of ``names`` had a problem."""
        return not self.at_fault.intersection(names)

    def raw(self, name: str) -> str | None:
        """The variable's text without surrounding blanks; None when unset or blank."""
        value = self.env.get(name, "").strip()
        return value or None

    def parse(
        self, name: str, default: str, convert: Callable[[str], T], expected: str
    ) -> tuple[T, bool]:
        text = self.raw(name) or default
        try:
            return convert(text), True
        except (ValueError, TypeError, OverflowError):
            self.note(name, f"{name}={quoted(text)} is invalid: expected {expected}")
            return convert(default), False

    def number(self, name: str, default: str, low: float, high: float) -> float:
        value, parsed = self.parse(name, default, float, "a number")
        if parsed and not low <= value <= high:  # also refuses nan
            shown = number_text(value)
            self.note(name, f"{name}={shown} is out of range: expected {low:g}..{high:g}")
            return float(default)
        return value

    def integer(self, name: str, default: str, low: int, high: int) -> int:
        value, parsed = self.parse(name, default, int, "a whole number")
        if parsed and not low <= value <= high:
            shown = number_text(value)
            self.note(name, f"{name}={shown} is out of range: expected {low}..{high}")
            return int(default)
        return value

    def flag(self, name: str, default: bool) -> bool:
        text = (self.raw(name) or str(default)).lower()
        if text in TRUE_WORDS | FALSE_WORDS:
            return text in TRUE_WORDS
        self.note(name, f"{name}={quoted(text)} is invalid: expected true or false")
        return default

    def choice(self, name: str, default: Choice, allowed: tuple[Choice, ...]) -> Choice:
        """One of ``allowed`` (case-insensitive), typed as narrowly as ``allowed`` is."""
        value = (self.raw(name) or default).lower()
        for option in allowed:
            if option == value:
                return option
        expected = " or ".join(filter(None, (", ".join(allowed[:-1]), allowed[-1])))
        self.note(name, f"{name}={quoted(value)} is invalid: expected {expected}")
        return default

    def url(self, name: str) -> str | None:
        """An http(s) URL, never quoted back (it may carry credentials)."""
        value = self.raw(name)
        if value is not None and not URL_RE.fullmatch(value.rstrip("/")):
            self.note(name, f"{name} is not a valid URL: expected {URL_RULE}")
        return value.rstrip("/") if value else None

    def tenant_id(self, name: str, value: str) -> str:
        if not TENANT_ID_RE.fullmatch(value):
            self.note(
                name, f"{name}: tenant id {quoted(value)} is invalid: expected {TENANT_ID_RULE}"
            )
        return value

    def pairs(
        self, name: str, what: str, value_ok: Callable[[str], object] = bool
    ) -> dict[str, str]:
        """Parse ``tenant=<what>,tenant=<what>`` into a dict.

        The values are secrets (or digests of them), and a malformed entry may be a bare
        key, so problems name an entry by its position and never quote any of it.
        """
        result: dict[str, str] = {}
        entries = [part.strip() for part in (self.raw(name) or "").split(",")]
        for position, item in enumerate(filter(None, entries), start=1):
            tenant, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not tenant or not value:
                problem = f"is not tenant={what}"
            elif not TENANT_ID_RE.fullmatch(tenant):
                problem = f"does not start with a valid tenant id ({TENANT_ID_RULE})"
            elif not value_ok(value):
                problem = f"does not end with a {what}"
            elif tenant in result:
                problem = "repeats the tenant of an earlier entry"
            else:
                result[tenant] = value
                continue
            self.note(name, f"{name}: entry {position} {problem} (value not shown)")
        return result


# --- what the per-answer readers exchange with config_reader.py ----------------------------


@dataclass(frozen=True)
class TenantApiKeys:
    """CYCLES_TENANT_API_KEYS: app tenant -> that tenant's Cycles runtime key."""

    keys: dict[str, str]
    # The app tenants the keys name, a default for a list of callers that is not set:
    # None while CYCLES_TENANT_API_KEYS itself is at fault (the tenants are not known yet).
    tenants: tuple[str, ...] | None


@dataclass(frozen=True)
class CyclesCredentials:
    """The Cycles credentials as set; which ones a server needs depends on the isolation."""

    tenant: str | None  # CYCLES_TENANT (None: not set)
    api_key: str | None  # CYCLES_API_KEY
    tenant_api_keys: TenantApiKeys


@dataclass(frozen=True)
class CallerDefaults:
    """Where the callers come from when their setting is empty."""

    development: bool  # the embedded ledger outside production: the development tenants
    cycles_key_tenants: tuple[str, ...] | None  # the tenants CYCLES_TENANT_API_KEYS names


@dataclass(frozen=True)
class Callers:
    """Who may call the app."""

    key_hashes: dict[str, str]  # api_key auth: sha256(key) -> tenant
    tenants: tuple[str, ...]
    valid: bool  # False: the list itself has problems; checks that depend on it are skipped


@dataclass(frozen=True)
class Tenancy:
    """Who calls the app, and the Cycles credentials that serve them."""

    credentials: CyclesCredentials
    callers: Callers
