"""One LLM call: what it reserves (its estimate covers its system text too) and the output
limit the provider gets under a Cycles cap."""

from __future__ import annotations

from typing import Any

import pytest

from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.holds import Hold
from {{ cookiecutter.package_name }}.llm import FakeProvider
from {{ cookiecutter.package_name }}.web.calls import HeldCall, LlmCall


def test_the_estimate_covers_the_system_text_and_the_output_limit() -> None:
    call = LlmCall(prompt="Summarize this.", max_tokens=40, system="Be brief.")
    assert call.texts() == ("Be brief.", "Summarize this.")
    expected = pricing.estimate("Be brief.", "Summarize this.", max_tokens=40)
    assert call.estimate(pricing.GENERATED) == expected
    assert expected > LlmCall(prompt="Summarize this.", max_tokens=40).estimate(pricing.GENERATED)


@pytest.mark.parametrize(("cap", "limit"), [(None, 40), (100, 40), (25, 25), (0, 0)])
def test_a_cycles_cap_lowers_the_output_limit(cap: int | None, limit: int) -> None:
    hold = Hold("acme", "chat", 1, "enforce", reservation_id="r1", max_tokens_cap=cap)
    budget: Any = None  # not used to work out the limit
    held = HeldCall(budget, hold, LlmCall(prompt="Hi", max_tokens=40), FakeProvider("m"))
    assert held.max_tokens == limit
