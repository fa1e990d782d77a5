"""The offline fake provider: deterministic answers and streams, usage it reports."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.llm import (
    MESSAGE_OVERHEAD_TOKENS,
    Completion,
    FakeProvider,
    ProviderError,
    StreamProgress,
    fake,
)

# Any text a caller can send: non-ASCII letters, combining marks, emoji (4 UTF-8 bytes).
TEXT = st.text() | st.text(alphabet=st.sampled_from("aé漢🙂👍🏽\u0301 \n"))
SYSTEM = st.none() | TEXT


def messages_of(prompt: str, system: str | None) -> list[str]:
    return [system, prompt] if system else [prompt]


def test_same_prompt_gives_the_same_completion() -> None:
    first = FakeProvider("gpt-test").complete(prompt="Summarise the plan", max_tokens=50)
    again = FakeProvider("gpt-test").complete(prompt="Summarise the plan", max_tokens=50)
    assert first == again
    assert first.model == "gpt-test"


def test_the_answer_is_built_from_the_prompt() -> None:
    provider = FakeProvider("gpt-test")
    tea = provider.complete(prompt="How do I brew green tea?", max_tokens=100)
    coffee = provider.complete(prompt="How do I brew coffee?", max_tokens=100)
    assert "green tea?" in tea.text
    assert "coffee?" in coffee.text
    assert tea != coffee


def test_usage_grows_with_the_prompt_like_a_real_tokenizer() -> None:
    completion = FakeProvider().complete(prompt="x" * 4_000, max_tokens=10)
    assert completion.input_tokens == 1_000 + MESSAGE_OVERHEAD_TOKENS


def test_a_system_prompt_is_billed_as_one_more_message() -> None:
    provider = FakeProvider()
    plain = provider.complete(prompt="hello", max_tokens=10)
    with_system = provider.complete(prompt="hello", max_tokens=10, system="Be terse.")
    assert with_system.input_tokens == plain.input_tokens + 3 + MESSAGE_OVERHEAD_TOKENS
    assert provider.complete(prompt="hello", max_tokens=10, system="") == plain


def test_a_short_answer_uses_fewer_tokens_than_allowed() -> None:
    completion = FakeProvider().complete(prompt="Hi", max_tokens=1_000)
    assert 0 < completion.output_tokens < 1_000
    assert completion.output_tokens == fake.estimate_tokens(completion.text)


@given(prompt=TEXT, system=SYSTEM, max_tokens=st.integers(min_value=1, max_value=300))
def test_usage_stays_within_what_pricing_reserves(
    prompt: str, system: str | None, max_tokens: int
) -> None:
    completion = FakeProvider().complete(prompt=prompt, max_tokens=max_tokens, system=system)

    texts = messages_of(prompt, system)
    byte_bound = sum(len(text.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for text in texts)
    assert 0 < completion.input_tokens <= byte_bound
    assert 0 < completion.output_tokens <= max_tokens
    assert completion.output_tokens == fake.estimate_tokens(completion.text)
    # What the budget reserves before the call covers what the call is charged after it.
    charged = pricing.cost(completion.input_tokens, completion.output_tokens)
    assert charged <= pricing.estimate(*texts, max_tokens=max_tokens)


def test_fail_with_makes_every_call_raise() -> None:
    provider = FakeProvider("gpt-test", fail_with="vendor is down")
    for _ in range(2):
        with pytest.raises(ProviderError, match="vendor is down") as info:
            provider.complete(prompt="Hi", max_tokens=10)
        assert info.value.status_code is None


def test_a_failing_fake_fails_streams_before_the_first_delta() -> None:
    stream = FakeProvider(fail_with="vendor is down").stream(
        prompt="Hi", max_tokens=10, progress=StreamProgress()
    )
    with pytest.raises(ProviderError, match="vendor is down"):
        next(stream)


def test_a_stream_yields_the_same_answer_and_usage_as_a_completion() -> None:
    provider = FakeProvider("gpt-test")
    prompt = "Name three   rivers of Europe, please."
    whole = provider.complete(prompt=prompt, max_tokens=12, system="Be brief.")
    progress = StreamProgress()
    stream = provider.stream(prompt=prompt, max_tokens=12, system="Be brief.", progress=progress)
    deltas = list(stream)
    assert len(deltas) > 3
    assert "".join(deltas) == whole.text
    assert progress.usage_final
    assert (progress.input_tokens, progress.output_tokens) == (
        whole.input_tokens,
        whole.output_tokens,
    )
    assert progress.text_bytes == len(whole.text.encode())
    assert progress.model == "gpt-test"


def test_a_stream_closed_early_reports_only_what_it_sent() -> None:
    progress = StreamProgress()
    stream = FakeProvider().stream(prompt="one two three four", max_tokens=64, progress=progress)
    first = next(stream)
    stream.close()
    assert not progress.usage_final
    assert progress.text_bytes == len(first.encode())
    assert progress.output_tokens == -(-len(first) // 4)


def test_one_word_is_not_words() -> None:
    assert "(1 word)" in FakeProvider().complete(prompt="Hello", max_tokens=64).text
    assert "(2 words)" in FakeProvider().complete(prompt="Hello there", max_tokens=64).text


def test_max_tokens_below_one_is_refused_like_a_real_api() -> None:
    with pytest.raises(ProviderError, match="max_tokens"):
        FakeProvider().complete(prompt="Hi", max_tokens=0)


def test_completion_is_immutable() -> None:
    completion = Completion(text="hi", input_tokens=9, output_tokens=1, model="m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        completion.text = "changed"  # type: ignore[misc]
