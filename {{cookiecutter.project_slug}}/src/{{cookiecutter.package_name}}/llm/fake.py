"""An offline, deterministic stand-in for a real model: the default in development and tests.

It needs no key and no network, answers the same prompt the same way every time, and
reports usage the way a real provider does, so budgets move realistically: input tokens
grow with the prompt, output tokens with the answer, and never past ``max_tokens``.
Streamed, the same answer arrives a few words per delta, with the usage at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from .base import MESSAGE_OVERHEAD_TOKENS, Completion, ProviderError, StreamProgress

# English text averages about four characters per token with the vendors' tokenizers.
CHARS_PER_TOKEN = 4
# How many words of the prompt the fake answer quotes back.
GIST_WORDS = 24
# A streamed answer arrives in deltas of a word and the space after it, as vendors send.
_DELTA = re.compile(r"\S+\s*|\s+")


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
    ``delta_delay_s`` paces a stream (a demo with ``curl -N`` shows the deltas arrive).
    """

    name = "fake"

    def __init__(
        self,
        model: str = "fake-model",
        *,
        fail_with: str | None = None,
        delta_delay_s: float = 0.0,
    ) -> None:
        self.model = model
        self.fail_with = fail_with
        self.delta_delay_s = delta_delay_s

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        self._check(max_tokens)
        text = self._answer(prompt, max_tokens)
        return Completion(
            text=text,
            input_tokens=self._input_tokens(prompt, system),
            output_tokens=estimate_tokens(text),
            model=self.model,
        )

    def stream(
        self,
        *,
        prompt: str,
        max_tokens: int,
        progress: StreamProgress,
        system: str | None = None,
    ) -> Iterator[str]:
        self._check(max_tokens)
        # Like Anthropic's message_start: the input side is known before the first delta.
        progress.input_tokens = self._input_tokens(prompt, system)
        progress.model = self.model
        sent = ""
        for delta in _DELTA.findall(self._answer(prompt, max_tokens)):
            if self.delta_delay_s:
                time.sleep(self.delta_delay_s)
            sent += delta
            progress.add_text(delta)
            progress.output_tokens = estimate_tokens(sent)
            yield delta
        progress.usage_final = True

    def _check(self, max_tokens: int) -> None:
        if self.fail_with is not None:
            raise ProviderError(self.fail_with)
        if max_tokens < 1:
            # What the real APIs answer with a 400.
            raise ProviderError(f"max_tokens must be at least 1, got {max_tokens}")

    @staticmethod
    def _input_tokens(prompt: str, system: str | None) -> int:
        messages = [system, prompt] if system else [prompt]
        return sum(estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS for text in messages)

    def _answer(self, prompt: str, max_tokens: int) -> str:
        words = prompt.split()
        gist = " ".join(words[:GIST_WORDS]) + (" ..." if len(words) > GIST_WORDS else "")
        count = f"{len(words)} word" + ("" if len(words) == 1 else "s")
        text = f"[fake {self.model}] You asked ({count}): {gist or '(nothing)'}"
        # Cutting at max_tokens * CHARS_PER_TOKEN characters keeps the output within max_tokens.
        return text[: max_tokens * CHARS_PER_TOKEN]
