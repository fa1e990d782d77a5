"""Typed access to what the app factory keeps on the app (``app.extensions``).

Everything lives on the app, never on a module: tests build many apps in one process, each
with its own settings, Cycles clients and provider. Code reaches that state through these
accessors only (``app`` defaults to the current app), so each key is named once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from .config import Settings
    from .cycles.clients import CyclesClients
    from .llm import LLMProvider
    from .observability.metrics import Metrics

SETTINGS = "settings"
CYCLES = "cycles"
LLM = "llm"  # tests (and operators) may swap the provider of one app here
METRICS = "metrics"
OPENAPI = "openapi_document"
CLOCK = "wall_clock"  # tests set a fixed wall clock here (key expiry); unset: the real one


def _get(app: Flask | None, key: str) -> Any:
    return (app if app is not None else current_app).extensions[key]


def settings(app: Flask | None = None) -> Settings:
    """The app's validated settings."""
    value: Settings = _get(app, SETTINGS)
    return value


def cycles(app: Flask | None = None) -> CyclesClients:
    """The app's Cycles clients, connection and guard machinery (cycles_clients.py)."""
    value: CyclesClients = _get(app, CYCLES)
    return value


def provider(app: Flask | None = None) -> LLMProvider:
    """The LLM provider the app calls."""
    value: LLMProvider = _get(app, LLM)
    return value


def metrics(app: Flask | None = None) -> Metrics:
    """The app's Prometheus metrics (metrics.py)."""
    value: Metrics = _get(app, METRICS)
    return value


def now(app: Flask | None = None) -> datetime:
    """The wall-clock time (UTC) as the app sees it: the clock set on the app, if any."""
    extensions = (app if app is not None else current_app).extensions
    clock: Callable[[], datetime] | None = extensions.get(CLOCK)
    return clock() if clock is not None else datetime.now(UTC)
