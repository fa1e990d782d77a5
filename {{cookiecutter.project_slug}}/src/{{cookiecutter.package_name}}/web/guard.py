"""The budget guard: every LLM route reserves its worst case before its view runs.

``@guarded(Request, to_call, ...)`` under a route validates the body as ``Request``, turns it
into an :class:`~.calls.LlmCall` with ``to_call``, computes the estimate (an upper bound,
from the pricing module) and reserves it for the caller before the view runs: a denial is
a 402 before any provider work. The view receives the resulting :class:`GuardedCall` and
runs the provider through it; the actual cost is committed afterwards, a provider error
releases the hold, and a view that never calls the provider releases it too. A served
request costs two Cycles calls (reserve, commit). The decorator also documents the route
(operations.py), so the API document lists it with its models.

No call outlives its hold: a completion is bounded by ``LLM_TIMEOUT`` and by the time its
hold has left (a call that overruns is abandoned and charged its full estimate, since the
vendor may still bill it); a stream (streaming.py) is kept alive by the heartbeat.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from flask import Response, current_app, g
from pydantic import BaseModel

from .. import callers
from ..budget import fit, reservations
from ..budget.end_users import end_user_budgets
from ..budget.holds import Hold, Usage
from ..budget.provider_deadlines import Overran
from ..budget.service import BudgetService, budget_service
from ..config import CYCLES_SAFETY_MARGIN_MS, Settings, app_settings
from ..errors import ApiError
from ..llm import ProviderError, app_provider
from ..llm.models import for_model
from . import budget_headers, streaming
from .bodies import json_body, validate
from .calls import GuardedCompletion, HeldCall, LlmCall, ms_since
from .operations import LLM_ERRORS, Operation, documented

__all__ = ["GuardedCall", "GuardedCompletion", "LlmCall", "guarded"]

Body = TypeVar("Body", bound=BaseModel)
GuardedView = Callable[["GuardedCall"], Response]

_MARGIN_S = CYCLES_SAFETY_MARGIN_MS / 1000


def guarded(
    request: type[Body],
    to_call: Callable[[Body, Settings], LlmCall],
    *,
    response: type[BaseModel],
    summary: str,
    answer: str,
    description: str | None = None,
    streams: bool = False,
) -> Callable[[GuardedView], Callable[[], Response]]:
    """Route decorator: reserve the budget for the body, then run the view under it.

    ``request`` is the JSON body's model, ``to_call`` makes the provider call of a valid
    body; ``response`` (the 200's model), ``summary``, ``answer`` (the 200 in words),
    ``description`` and ``streams`` (``"stream": true`` answers server-sent events) go
    into the API document. The view's name is the route's name in metrics and Cycles.
    """
    operation = Operation(
        summary,
        answer,
        response=response,
        request=request,
        errors=LLM_ERRORS,
        description=description,
        streams=streams,
        guarded=True,
    )

    def decorate(view: GuardedView) -> Callable[[], Response]:
        route = view.__name__

        @functools.wraps(view)
        def reserve_then_run() -> Response:
            settings = app_settings()
            call = to_call(validate(request, json_body(), settings), settings)
            guarded_call = GuardedCall.reserve(route, call)
            try:
                return view(guarded_call)
            finally:
                # Whatever the view did, a hold it did not settle or hand to a stream
                # goes back now rather than at its TTL.
                guarded_call.release_unless_used("view_returned_without_settling")

        return documented(operation)(reserve_then_run)

    return decorate


def _fitted(budget: BudgetService, tenant: str, call: LlmCall, denial: ApiError) -> LlmCall | None:
    """``call`` with the lower max_tokens what remains buys (budget/fit.py), or None."""
    fitted = fit.fitted_max_tokens(
        budget,
        tenant,
        denial,
        texts=call.texts(),
        max_tokens=call.max_tokens,
        model=call.model or "",
        user=call.user or "",
    )
    if fitted is None:
        return None
    return replace(call, max_tokens=fitted, requested_max_tokens=call.max_tokens)


class GuardedCall(HeldCall):
    """One provider call under its hold: :meth:`complete` or :meth:`stream`, once."""

    _streaming = False  # set on the instance once a stream's body owns the hold

    @classmethod
    def reserve(cls, route: str, call: LlmCall) -> GuardedCall:
        """Reserve ``call``'s estimate for the current caller, or raise the refusal."""
        settings, budget, tenant = app_settings(), budget_service(), callers.current_tenant()
        # Set by the request log for every request (observability/request_log.py).
        request_id: str | None = g.get("request_id")

        def hold_for(call: LlmCall) -> Hold:
            return reservations.reserve(
                budget,
                tenant,
                route,
                call.estimate(settings.prices_of(call.model)),
                request_id=request_id,
                model=call.model or "",
                user=call.user or "",
            )

        try:
            if call.user:
                # Its budget must exist before the reservation (Cycles skips a scope
                # without one): made on first use.
                end_user_budgets(current_app).ensure(budget, tenant, call.user, call.model or "")
            try:
                hold = hold_for(call)
            except ApiError as denial:
                fitted = _fitted(budget, tenant, call, denial)
                if fitted is None:
                    raise
                call, hold = fitted, hold_for(fitted)
        except ApiError as error:
            budget_headers.note_denial(error)  # a 402 names the balance in its headers too
            raise
        guarded = cls(budget, hold, call, for_model(app_provider(), call.model))
        budget_headers.note_call(guarded)
        return guarded

    def complete(self) -> GuardedCompletion:
        """Call the provider under the hold, then commit what it reports."""
        self._check_cap()
        started = time.monotonic()
        try:
            completion = self.cycles.provider_calls.run(
                lambda: self.provider.complete(
                    prompt=self.call.prompt, max_tokens=self.max_tokens, system=self.call.system
                ),
                self._time_allowed(),
            )
        except ProviderError:
            self.release("provider_error")
            raise
        except Overran:
            # The vendor may still be working (and billing): charge the most it can cost.
            self.settle(self.hold.estimate, self.worst_case_usage(started))
            raise ApiError(
                504, "provider_timeout", "The language model did not answer in time."
            ) from None
        usage = Usage(
            completion.input_tokens,
            completion.output_tokens,
            completion.model,
            ms_since(started),
            cached_input_tokens=completion.cached_input_tokens,
            cache_write_tokens=completion.cache_write_tokens,
        )
        cost = self.cost(usage)
        settlement = self.settle(cost, usage)
        if settlement is not None and settlement.outcome == "late":
            # The hold lapsed at Cycles before the commit: the cost is recorded, but an
            # answer served now would be one more than the budget allowed.
            raise ApiError(
                503,
                "reservation_expired",
                "The budget hold lapsed before the answer was ready; try again.",
            )
        return GuardedCompletion(completion, self.max_tokens, cost, self.call.requested_max_tokens)

    def stream(self) -> Response:
        """Server-sent events: a ``delta`` per text delta, then ``done`` (or ``error``)."""
        self._check_cap()
        response = streaming.respond(self)
        self._streaming = True  # from here on the stream's body settles the hold
        return response

    def release_unless_used(self, reason: str) -> None:
        if not self._streaming:
            self.release(reason)

    def _check_cap(self) -> None:
        if self.max_tokens < 1:
            raise ApiError(
                402, "budget_capped", "The budget allows no more output tokens right now."
            )

    def _time_allowed(self) -> float:
        """How long the provider may take: LLM_TIMEOUT, and less if the hold is shorter."""
        allowed = self.cycles.settings.llm_timeout
        if self.hold.held:
            left = self.cycles.keeper.time_left(self.hold)
            allowed = min(allowed, left - self.cycles.call_budget_s() - _MARGIN_S)
        return allowed
