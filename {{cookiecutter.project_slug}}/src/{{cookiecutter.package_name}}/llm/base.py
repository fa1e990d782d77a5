"""What every LLM provider promises: one completion call, its usage, and one error type."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

# Chat formats wrap each message in a few tokens of their own (role markers, separators).
# Providers that estimate usage add this per message; pricing adds it to its upper bound.
MESSAGE_OVERHEAD_TOKENS = 8

# Vendor error text ends up in logs and 502 bodies: keep it to a readable line.
MAX_ERROR_DETAIL_CHARS = 300


@dataclass(frozen=True)
class Completion:
    """The model's answer and the usage the provider reports (what the call is billed on)."""

    text: str
    input_tokens: int  # all of them, including those read from or written to a prompt cache
    output_tokens: int
    model: str  # the model the provider says it used, which may be a dated variant
    # The parts of input_tokens the provider read from / wrote to its prompt cache, which
    # it bills below / above the input price (pricing.py).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class StreamProgress:
    """What a streaming call has produced so far; the provider updates it as events arrive.

    The guard bills a stream from this: the provider's own counts, and where the stream
    ended before the provider counted (the caller hung up, the hold ran out, the provider
    failed midway), an upper bound of what was generated: the prompt's byte bound for the
    input, the UTF-8 bytes received (at most ``max_tokens``) for the output.
    """

    input_tokens: int | None = None  # as the provider reports them (often only at the end)
    output_tokens: int | None = None  # as the provider counts them so far; None: not counted
    text_bytes: int = 0  # UTF-8 bytes of the text deltas yielded so far
    model: str | None = None  # the model the provider says it used
    usage_final: bool = False  # the provider reported the stream's final usage
    # The parts of input_tokens read from / written to the prompt cache, as reported.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    def add_text(self, text: str) -> None:
        self.text_bytes += len(text.encode("utf-8", "surrogatepass"))


class ProviderError(Exception):
    """The provider could not produce a completion: vendor error, timeout, bad response.

    The message is safe to log: it never contains the API key. It may quote the vendor's
    error text, so tell end users something generic. ``status_code`` is the vendor's HTTP
    status when there was one.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMProvider(Protocol):
    name: str
    model: str

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        """Answer ``prompt`` in at most ``max_tokens`` output tokens; an empty system is none."""
        ...

    def stream(
        self,
        *,
        prompt: str,
        max_tokens: int,
        progress: StreamProgress,
        system: str | None = None,
    ) -> Iterator[str]:
        """Yield the answer as text deltas, keeping ``progress`` up to date.

        Raises :class:`ProviderError` (before or between deltas) when the call fails.
        Closing the iterator early must end the vendor call, so nothing more is generated.
        """
        ...


def safe_detail(text: str, *secrets: str | None) -> str:
    """``text`` on one short line with every secret blanked out, ready for a log line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    line = " ".join(text.split())
    if len(line) > MAX_ERROR_DETAIL_CHARS:
        line = line[: MAX_ERROR_DETAIL_CHARS - 3] + "..."
    return line


def vendor_error_detail(body: object) -> str:
    """The human-readable part of a vendor's JSON error body, e.g. ``not_found: no model``.

    OpenAI and Anthropic both send ``{"error": {"type": ..., "message": ...}}``; the SDKs hand
    over the inner object, or the raw text when the body was not JSON.
    """
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            kind, message = inner.get("type"), inner.get("message")
            parts = [str(part) for part in (kind, message) if part]
            return ": ".join(parts)
    return body if isinstance(body, str) else ""
