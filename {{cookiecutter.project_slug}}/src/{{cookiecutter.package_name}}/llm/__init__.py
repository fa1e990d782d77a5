"""LLM providers behind one small interface; :func:`build_provider` picks one by name.

The offline ``fake`` provider is always available (development and tests use it unless
``LLM_PROVIDER`` names another); ``prices`` says what the running model costs; the real
provider chosen when the project was generated, if any, is built by ``vendors.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

from .base import MESSAGE_OVERHEAD_TOKENS, Completion, LLMProvider, ProviderError, StreamProgress
from .fake import FakeProvider
from .vendors import VENDORS, build_vendor

if TYPE_CHECKING:
    from .vendors import HttpClient

AVAILABLE_PROVIDERS: tuple[str, ...] = ("fake", *VENDORS)
# create_app keeps the app's provider here; tests (and operators) may swap it per app.
PROVIDER_EXTENSION = "llm"

__all__ = [
    "AVAILABLE_PROVIDERS",
    "MESSAGE_OVERHEAD_TOKENS",
    "PROVIDER_EXTENSION",
    "Completion",
    "FakeProvider",
    "LLMProvider",
    "ProviderError",
    "StreamProgress",
    "app_provider",
    "build_provider",
]


def build_provider(
    name: str,
    *,
    model: str,
    api_key: str | None = None,
    timeout_s: float = 30.0,
    http_client: HttpClient | None = None,
) -> LLMProvider:
    """The provider called ``name`` (one of :data:`AVAILABLE_PROVIDERS`), ready to use.

    ``api_key`` is required by real providers and ignored by the fake. ``http_client``
    replaces a real provider SDK's own HTTP client; tests pass one with an
    ``httpx2.MockTransport`` so that nothing leaves the process.
    """
    if name == "fake":
        return FakeProvider(model)
    if name in VENDORS:
        return build_vendor(
            name, model=model, api_key=api_key, timeout_s=timeout_s, http_client=http_client
        )
    allowed = ", ".join(AVAILABLE_PROVIDERS)
    raise ValueError(f"unknown LLM provider {name!r}: expected one of {allowed}")


def app_provider(app: Flask | None = None) -> LLMProvider:
    """The LLM provider the app calls (``app`` defaults to the current app)."""
    provider: LLMProvider = (app if app is not None else current_app).extensions[PROVIDER_EXTENSION]
    return provider
