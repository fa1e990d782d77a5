"""One budget-guarded model call: reserve the worst case, call the model, commit the rest.

The reservation holds ``pricing.estimate(...)`` (an upper bound) before the provider is
called; the commit charges what the provider reports at the prompted prices and returns
the difference. A failing provider releases the hold, so the budget is untouched.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass

from flask import current_app
from runcycles import Amount, Caps, CyclesMetrics, CyclesProtocolError, Unit, get_cycles_context

from . import pricing
from .budget import get_budgets, is_unavailable
from .config import Settings
from .errors import ApiError
from .llm import Completion, LLMProvider

log = logging.getLogger(__name__)

# Cycles metrics limit model_version to 128 characters.
MAX_MODEL_VERSION_CHARS = 128


@dataclass(frozen=True)
class LlmCall:
    """A validated request for one completion, as a route asks for it."""

    route: str
    prompt: str
    max_tokens: int
    system: str | None = None

    def estimate(self) -> int:
        """The most this call can cost, in USD microcents: what gets reserved."""
        texts = (self.system, self.prompt) if self.system else (self.prompt,)
        return pricing.estimate(*texts, max_tokens=self.max_tokens)


@dataclass(frozen=True)
class GuardedCompletion:
    completion: Completion
    max_tokens: int  # the output limit the provider was given (after any Cycles cap)
    cost: int  # USD microcents charged for the call
    guarded: bool  # False only when CYCLES_FAIL_OPEN served it without Cycles


def get_provider() -> LLMProvider:
    provider: LLMProvider = current_app.extensions["llm"]
    return provider


def complete(call: LlmCall, tenant: str) -> GuardedCompletion:
    """Run ``call`` for ``tenant`` under a Cycles reservation."""
    settings: Settings = current_app.extensions["settings"]
    budgets = get_budgets(current_app)
    reservation = budgets.client_for(tenant).stream_reservation(
        subject=budgets.subject_for(tenant),
        action=budgets.action(),
        estimate=Amount(unit=Unit.USD_MICROCENTS, amount=call.estimate()),
        ttl_ms=settings.cycles_reservation_ttl_ms,
        metadata={"route": call.route},
    )
    with ExitStack() as stack:
        try:
            stack.enter_context(reservation)
        except CyclesProtocolError as exc:
            if not (budgets.fail_open and is_unavailable(exc.status)):
                raise
            log.warning("Cycles is unavailable; CYCLES_FAIL_OPEN serves %s unguarded", call.route)
            return _call_provider(call, call.max_tokens, guarded=False)
        # Leaving the block commits what the usage says; an exception releases the hold.
        result = _call_provider(call, _capped(call.max_tokens, reservation.caps), guarded=True)
        reservation.usage.set_actual_cost(result.cost)
    return result


def _capped(requested: int, caps: Caps | None) -> int:
    """The output limit after a Cycles ``ALLOW_WITH_CAPS`` decision."""
    if caps is None or caps.max_tokens is None:
        return requested
    if caps.max_tokens < 1:
        raise ApiError(402, "budget_capped", "The budget allows no more output tokens right now.")
    return min(requested, caps.max_tokens)


def _call_provider(call: LlmCall, max_tokens: int, *, guarded: bool) -> GuardedCompletion:
    started = time.monotonic()
    completion = get_provider().complete(
        prompt=call.prompt, max_tokens=max_tokens, system=call.system
    )
    latency_ms = int((time.monotonic() - started) * 1000)
    context = get_cycles_context()
    if guarded and context is not None:
        # Committed with the charge, so the ledger shows what each call used.
        context.metrics = CyclesMetrics(
            tokens_input=completion.input_tokens,
            tokens_output=completion.output_tokens,
            latency_ms=latency_ms,
            model_version=completion.model[:MAX_MODEL_VERSION_CHARS],
        )
    cost = pricing.cost(completion.input_tokens, completion.output_tokens)
    return GuardedCompletion(completion, max_tokens, cost, guarded)
