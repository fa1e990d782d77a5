"""affordable_output: the most output tokens whose worst case fits what remains, exactly."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.budget.fit import affordable_output
from {{ cookiecutter.package_name }}.llm.prices import ModelPrices

TEXTS = ("Name three rivers of Europe.",)
PRICES = ModelPrices("m", 250_000_000, 125_000_000, 1_000_000_000, "test", 312_500_000)


def brute_force(remaining: int, limit: int) -> int:
    fits = [
        n
        for n in range(limit + 1)
        if pricing.estimate(*TEXTS, max_tokens=n, prices=PRICES) <= remaining
    ]
    return max(fits, default=0)


def test_exactly_what_the_estimate_allows_on_every_boundary() -> None:
    for n in (0, 1, 7, 50):
        at = pricing.estimate(*TEXTS, max_tokens=n, prices=PRICES)
        assert affordable_output(TEXTS, PRICES, at, 100) == brute_force(at, 100) == n
        assert affordable_output(TEXTS, PRICES, at - 1, 100) == brute_force(at - 1, 100)
        assert affordable_output(TEXTS, PRICES, at - 1, 100) < max(n, 1)


def test_never_above_the_limit_and_nothing_when_the_input_does_not_fit() -> None:
    assert affordable_output(TEXTS, PRICES, 10**12, 30) == 30
    assert affordable_output(TEXTS, PRICES, 0, 30) == 0
    free = ModelPrices("free-output", 250_000_000, 250_000_000, 0, "test")
    assert affordable_output(TEXTS, free, 10**6, 30) == 30
