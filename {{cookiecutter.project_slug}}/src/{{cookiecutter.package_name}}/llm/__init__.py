"""LLM providers behind one small interface; :func:`build_provider` picks one by name.

The offline ``fake`` provider is always available (development and tests use it unless
``LLM_PROVIDER`` names another); ``prices`` says what the running model costs;
{%- if cookiecutter.llm_provider == 'fake' %}
add a real provider next to it by implementing :class:`LLMProvider`.
{%- else %}
``{{ cookiecutter.llm_provider }}`` calls the real API through its official SDK.
{%- endif %}
"""

from __future__ import annotations
{%- if cookiecutter.llm_provider != 'fake' %}

from typing import TYPE_CHECKING
{%- endif %}

from .base import MESSAGE_OVERHEAD_TOKENS, Completion, LLMProvider, ProviderError, StreamProgress
from .fake import FakeProvider
{%- if cookiecutter.llm_provider != 'fake' %}

if TYPE_CHECKING:
    import httpx2
{%- endif %}

{%- if cookiecutter.llm_provider == 'fake' %}

AVAILABLE_PROVIDERS: tuple[str, ...] = ("fake",)
{%- else %}

AVAILABLE_PROVIDERS: tuple[str, ...] = ("fake", "{{ cookiecutter.llm_provider }}")
{%- endif %}

__all__ = [
    "AVAILABLE_PROVIDERS",
    "MESSAGE_OVERHEAD_TOKENS",
    "Completion",
    "FakeProvider",
    "LLMProvider",
    "ProviderError",
    "StreamProgress",
    "build_provider",
]


def build_provider(
    name: str,
    *,
    model: str,
    api_key: str | None = None,
    timeout_s: float = 30.0,
{%- if cookiecutter.llm_provider != 'fake' %}
    http_client: httpx2.Client | None = None,
{%- endif %}
) -> LLMProvider:
    """The provider called ``name`` (one of :data:`AVAILABLE_PROVIDERS`), ready to use.

    ``api_key`` is required by real providers and ignored by the fake.
{%- if cookiecutter.llm_provider != 'fake' %}
    ``http_client`` replaces the SDK's own HTTP client; tests pass one with an
    ``httpx2.MockTransport`` so that nothing leaves the process.
{%- endif %}
    """
    if name == "fake":
        return FakeProvider(model)
{%- if cookiecutter.llm_provider == 'openai' %}
    if name == "openai":
        if not api_key:
            raise ValueError("the openai provider needs an API key (OPENAI_API_KEY)")
        # The SDK takes about a second to import: pay for it only when it is used.
        from .openai_provider import OpenAIProvider

        return OpenAIProvider(
            model=model, api_key=api_key, timeout_s=timeout_s, http_client=http_client
        )
{%- elif cookiecutter.llm_provider == 'anthropic' %}
    if name == "anthropic":
        if not api_key:
            raise ValueError("the anthropic provider needs an API key (ANTHROPIC_API_KEY)")
        # The SDK takes about a second to import: pay for it only when it is used.
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider(
            model=model, api_key=api_key, timeout_s=timeout_s, http_client=http_client
        )
{%- endif %}
    allowed = ", ".join(AVAILABLE_PROVIDERS)
    raise ValueError(f"unknown LLM provider {name!r}: expected one of {allowed}")
