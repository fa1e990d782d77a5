"""An offline, deterministic stand-in for a real model: the default in development and tests.

It needs no key and no network, answers the same prompt the same way every time, and
reports usage the way a real provider does, so budgets move realistically: input tokens
grow with the prompt, output tokens with the answer, and never past ``max_tokens``.
"""

from __future__ import annotations

from .base import MESSAGE_OVERHEAD_TOKENS, Completion, ProviderError

# English text averages about four characters per token with the vendors' tokenizers.
CHARS_PER_TOKEN = 4
# How many words of the prompt the fake answer quotes back.
GIST_WORDS = 24


def estimate_tokens(text: str) -> int:
    """About one token per four characters, rounded up.

    Never more than the text's UTF-8 byte count (a character is at least one byte), which
    is the bound pricing reserves against.
    """
    return -(-len(text) // CHARS_PER_TOKEN)


class FakeProvider:
    """Answers with a short, recognisably fake gist of the prompt.

    ``fail_with`` makes every call raise :class:`ProviderError` with that message, which is
    how tests exercise the "provider failed" path (502, reservation released).
    """

    name = "fake"

    def __init__(self, model: str = "fake-model", *, fail_with: str | None = None) -> None:
        self.model = model
        self.fail_with = fail_with

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        if self.fail_with is not None:
            raise ProviderError(self.fail_with)
        if max_tokens < 1:
            # What the real APIs answer with a 400.
            raise ProviderError(f"max_tokens must be at least 1, got {max_tokens}")
        messages = [system, prompt] if system else [prompt]
        input_tokens = sum(estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS for text in messages)
        # Cutting at max_tokens * CHARS_PER_TOKEN characters keeps the output within max_tokens.
        text = self._answer(prompt)[: max_tokens * CHARS_PER_TOKEN]
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=estimate_tokens(text),
            model=self.model,
        )

    def _answer(self, prompt: str) -> str:
        words = prompt.split()
        gist = " ".join(words[:GIST_WORDS]) + (" ..." if len(words) > GIST_WORDS else "")
        return f"[fake {self.model}] You asked ({len(words)} words): {gist or '(nothing)'}"


class FailingProvider(FakeProvider):
    """A fake whose every call fails, as an unreachable or erroring vendor would."""

    def __init__(
        self, model: str = "fake-model", *, message: str = "the fake provider is set to fail"
    ) -> None:
        super().__init__(model, fail_with=message)
