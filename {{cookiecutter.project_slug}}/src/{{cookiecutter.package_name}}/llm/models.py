"""One provider, several models: the app's provider answering as another allowed model.

Every provider names its model in ``model`` and sends that name with each call, so the
provider for another model (``LLM_MODELS``, config_models.py) is a shallow copy with
``model`` set: it shares the SDK client and its connection pool with the original.
"""

from __future__ import annotations

import copy

from .base import LLMProvider


def for_model(provider: LLMProvider, model: str | None) -> LLMProvider:
    """``provider`` calling ``model``; itself when ``model`` is None or already its own."""
    if model is None or model == provider.model:
        return provider
    other = copy.copy(provider)
    other.model = model
    return other
