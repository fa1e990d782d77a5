"""One LLM call as a route asks for it (:class:`LlmCall`), and the same call under its
budget hold (:class:`HeldCall`): what it may produce and how it is charged.

Shared by the guard (guard.py: reserve, complete) and by streams (streaming.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..budget import pricing, reservations
from ..budget.holds import Hold, Settlement, Usage
from ..budget.service import BudgetService
from ..llm import Completion, LLMProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmCall:
    """A validated request for one completion, as a route asks for it."""

    prompt: str
    max_tokens: int
    system: str | None = None
    stream: bool = False
    model: str | None = None  # one of LLM_MODELS; None: LLM_MODEL
    user: str | None = None  # the caller's end user (budget/end_users.py); None: none named
    # Fit-to-budget (budget/fit.py): the max_tokens asked for, when the budget bought fewer
    requested_max_tokens: int | None = None

    def texts(self) -> tuple[str, ...]:
        return (self.system, self.prompt) if self.system else (self.prompt,)

    def estimate(self, prices: pricing.ModelPrices) -> int:
        """The most this call can cost at ``prices``, in USD microcents: what gets reserved."""
        return pricing.estimate(*self.texts(), max_tokens=self.max_tokens, prices=prices)


@dataclass(frozen=True)
class GuardedCompletion:
    completion: Completion
    max_tokens: int  # the output limit the provider was given (after any Cycles cap)
    cost: int  # USD microcents charged for the call
    requested_max_tokens: int | None = None  # set when fit-to-budget lowered max_tokens


class HeldCall:
    """An :class:`LlmCall` for which ``hold`` is reserved, to run on ``provider``."""

    def __init__(
        self,
        cycles: BudgetService,
        hold: Hold,
        call: LlmCall,
        provider: LLMProvider,
    ) -> None:
        self.cycles = cycles
        self.hold = hold
        self.call = call
        self.provider = provider
        # What the call was charged once settled (0: released); None while it runs.
        self.charged: int | None = None

    @property
    def max_tokens(self) -> int:
        """The output limit the provider gets: the caller's, lowered by a Cycles cap."""
        cap = self.hold.max_tokens_cap
        return self.call.max_tokens if cap is None else min(self.call.max_tokens, cap)

    def cost(self, usage: Usage) -> int:
        """What ``usage`` costs at the prices of the model the call asked for."""
        return pricing.cost(
            usage.input_tokens,
            usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            prices=self.cycles.settings.prices_of(self.call.model),
        )

    def settle(self, cost: int, usage: Usage) -> Settlement | None:
        """Commit ``cost``; a provider that went past max_tokens is charged in full, and
        logged."""
        if usage.output_tokens > self.max_tokens:
            log.warning(
                "Tenant %s: %s reported %s output tokens, more output tokens than "
                "max_tokens=%s allowed; charging all of them",
                self.hold.tenant,
                usage.model,
                usage.output_tokens,
                self.max_tokens,
            )
        settlement = reservations.settle(self.cycles, self.hold, cost, usage)
        if settlement is not None:
            self.charged = settlement.charged
        return settlement

    def release(self, reason: str) -> None:
        if not self.hold.settled:
            self.charged = 0
        reservations.release(self.cycles, self.hold, reason)

    def remaining_budget(self) -> int | None:
        """The caller's remaining budget in USD microcents (``Hold.remaining_after``)."""
        return self.hold.remaining_after(self.charged)

    def worst_case_usage(self, started: float) -> Usage:
        """The most the call can have used: every input token, max_tokens of output."""
        return Usage(
            pricing.max_input_tokens(*self.call.texts()),
            self.max_tokens,
            self.provider.model,
            ms_since(started),
        )


def ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
