"""The budget guard: every LLM route reserves its worst case before its view runs.

``@guarded(parse)`` under a route validates the body with ``parse``, computes the estimate
(an upper bound, from the pricing module) and reserves it for the caller before the view
runs: a denial is a 402 before any provider work. The view receives the resulting
:class:`GuardedCall` and runs the provider through it; the actual cost is committed
afterwards, a provider error releases the hold, and a view that never calls the provider
releases it too. A served request costs two Cycles calls (reserve, commit).

No call outlives its hold: a completion is bounded by ``LLM_TIMEOUT`` and by the time its
hold has left (a call that overruns is abandoned and charged its full estimate, since the
vendor may still bill it); a stream's hold is extended by the app's heartbeat while the
stream runs, and the stream ends early if an extension fails.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response

from . import callers, pricing, request_log, reservations, sse, state
from .bodies import json_body
from .bounded_calls import Overran
from .config import CYCLES_SAFETY_MARGIN_MS, Settings
from .cycles_clients import CyclesClients
from .errors import ApiError
from .llm import Completion, LLMProvider, ProviderError, StreamProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmCall:
    """A validated request for one completion, as a route asks for it."""

    route: str
    prompt: str
    max_tokens: int
    system: str | None = None
    stream: bool = False

    def texts(self) -> tuple[str, ...]:
        return (self.system, self.prompt) if self.system else (self.prompt,)

    def estimate(self) -> int:
        """The most this call can cost, in USD microcents: what gets reserved."""
        return pricing.estimate(*self.texts(), max_tokens=self.max_tokens)


@dataclass(frozen=True)
class GuardedCompletion:
    completion: Completion
    max_tokens: int  # the output limit the provider was given (after any Cycles cap)
    cost: int  # USD microcents charged for the call


CallParser = Callable[[Mapping[str, Any], Settings], LlmCall]
GuardedView = Callable[["GuardedCall"], Response]


def guarded(parse: CallParser) -> Callable[[GuardedView], Callable[[], Response]]:
    """Route decorator: reserve the budget for the parsed body, then run the view under it."""

    def decorate(view: GuardedView) -> Callable[[], Response]:
        @functools.wraps(view)
        def reserve_then_run() -> Response:
            call = parse(json_body(), state.settings())
            cycles = state.cycles()
            tenant, estimate = callers.current_tenant(), call.estimate()
            try:
                hold = reservations.reserve(cycles, tenant, call.route, estimate)
            except ApiError as refusal:
                request_log.refused(call.route, tenant, estimate, refusal)
                raise
            request_log.reserved(hold)
            guarded_call = GuardedCall(cycles, hold, call, state.provider())
            try:
                return view(guarded_call)
            finally:
                # Whatever the view did, a hold it did not settle or hand to a stream
                # goes back now rather than at its TTL.
                guarded_call.release_unless_used("view_returned_without_settling")

        return reserve_then_run

    return decorate


class GuardedCall:
    """One provider call under its hold: :meth:`complete` or :meth:`stream`, once."""

    def __init__(
        self,
        cycles: CyclesClients,
        hold: reservations.Hold,
        call: LlmCall,
        provider: LLMProvider,
    ) -> None:
        self.cycles = cycles
        self.hold = hold
        self.call = call
        self.provider = provider
        self._streaming = False

    @property
    def max_tokens(self) -> int:
        """The output limit the provider gets: the caller's, lowered by a Cycles cap."""
        cap = self.hold.max_tokens_cap
        return self.call.max_tokens if cap is None else min(self.call.max_tokens, cap)

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
            reservations.release(self.cycles, self.hold, "provider_error")
            raise
        except Overran:
            # The vendor may still be working (and billing): charge the most it can cost.
            self._settle(self.hold.estimate, self._worst_case_usage(started))
            raise ApiError(
                504, "provider_timeout", "The language model did not answer in time."
            ) from None
        cost = pricing.cost(completion.input_tokens, completion.output_tokens)
        usage = reservations.Usage(
            completion.input_tokens, completion.output_tokens, completion.model, _ms_since(started)
        )
        settlement = self._settle(cost, usage)
        if settlement is not None and settlement.outcome == "late":
            # The hold lapsed at Cycles before the commit: the cost is recorded, but an
            # answer served now would be one more than the budget allowed.
            raise ApiError(
                503,
                "reservation_expired",
                "The budget hold lapsed before the answer was ready; try again.",
            )
        return GuardedCompletion(completion, self.max_tokens, cost)

    def stream(self) -> Response:
        """Server-sent events: a ``delta`` per text delta, then ``done`` (or ``error``).

        The first delta is awaited here, so a provider that fails at once still gets a
        JSON 502; after that, failures arrive as an ``error`` event.
        """
        self._check_cap()
        self.cycles.keeper.watch(self.hold)
        # If either raises, the hold is released (by the decorator) or settled (by
        # first_delta, when the provider failed after it started).
        run = _StreamRun(self)
        first = run.first_delta()
        self._streaming = True  # from here on the stream's body settles the hold
        return sse.response(_StreamBody(run, first))

    def release_unless_used(self, reason: str) -> None:
        if not self._streaming:
            reservations.release(self.cycles, self.hold, reason)

    # --- helpers ---------------------------------------------------------------------

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

    def _settle(self, cost: int, usage: reservations.Usage) -> reservations.Settlement | None:
        return settle(self, cost, usage)

    def _worst_case_usage(self, started: float) -> reservations.Usage:
        return reservations.Usage(
            pricing.max_input_tokens(*self.call.texts()),
            self.max_tokens,
            self.provider.model,
            _ms_since(started),
        )


_MARGIN_S = CYCLES_SAFETY_MARGIN_MS / 1000


class _StreamRun:
    """The life of one stream: deltas out, then the commit of what was generated."""

    def __init__(self, guarded: GuardedCall) -> None:
        self.guarded = guarded
        self.progress = StreamProgress()
        self.started = time.monotonic()
        call = guarded.call
        self.deltas = guarded.provider.stream(
            prompt=call.prompt,
            max_tokens=guarded.max_tokens,
            system=call.system,
            progress=self.progress,
        )

    def first_delta(self) -> str | None:
        try:
            return next(self.deltas)
        except StopIteration:
            return None
        except ProviderError:
            self.close_provider()
            if self._generated_nothing():
                reservations.release(self.guarded.cycles, self.guarded.hold, "provider_error")
            else:
                self.settle()
            raise
        except BaseException:
            self.close_provider()
            self.settle()
            raise

    def events(self, first: str | None) -> Generator[bytes, None, None]:
        error: ApiError | None = None
        try:
            if first is not None:
                yield sse.event("delta", {"text": first})
                error = yield from self._rest()
        finally:
            # Also reached when the client hangs up (GeneratorExit at a yield): the
            # provider is stopped and what it generated until then is charged.
            self.close_provider()
            cost = self.settle()
        if error is not None:
            yield sse.event("error", {"error": error.error, "message": error.message})
            return
        yield sse.event("done", self._summary(cost))

    def _rest(self) -> Generator[bytes, None, ApiError | None]:
        """Relay the remaining deltas; return the error that ended the stream, if any."""
        cycles, hold = self.guarded.cycles, self.guarded.hold
        while True:
            if hold.held and cycles.keeper.time_left(hold) < cycles.stream_cutoff_s():
                # The heartbeat could not extend the hold: stop while it still covers
                # the commit, rather than let the call run on unguarded.
                return ApiError(
                    503, "budget_hold_lapsing", "The budget hold could not be extended."
                )
            try:
                delta = next(self.deltas)
            except StopIteration:
                return None
            except ProviderError as exc:
                log.warning("LLM provider failed mid-stream: %s", exc)
                return ApiError(502, "provider_error", "The language model provider failed.")
            yield sse.event("delta", {"text": delta})

    def settle(self) -> int:
        usage = self._usage()
        cost = pricing.cost(usage.input_tokens, usage.output_tokens)
        settle(self.guarded, cost, usage)
        return cost

    def _usage(self) -> reservations.Usage:
        """The provider's own usage when it reported it; otherwise an upper bound."""
        progress, call = self.progress, self.guarded.call
        input_tokens = progress.input_tokens
        if input_tokens is None:
            input_tokens = pricing.max_input_tokens(*call.texts())
        output_tokens = progress.output_tokens
        if output_tokens is None:
            # Cut short before the provider counted: every token is at least one byte,
            # and none past max_tokens.
            output_tokens = min(progress.text_bytes, self.guarded.max_tokens)
        return reservations.Usage(
            input_tokens,
            output_tokens,
            progress.model or self.guarded.provider.model,
            _ms_since(self.started),
        )

    def _summary(self, cost: int) -> dict[str, Any]:
        usage = self._usage()
        return {
            "model": usage.model,
            "max_tokens": self.guarded.max_tokens,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "cost_usd_microcents": cost,
        }

    def _generated_nothing(self) -> bool:
        return self.progress.text_bytes == 0 and not self.progress.output_tokens

    def close_provider(self) -> None:
        close = getattr(self.deltas, "close", None)
        if close is not None:
            close()


def settle(
    guarded: GuardedCall, cost: int, usage: reservations.Usage
) -> reservations.Settlement | None:
    """Commit ``cost``; a provider that went past max_tokens is charged in full, and logged."""
    if usage.output_tokens > guarded.max_tokens:
        log.warning(
            "Tenant %s: %s reported %s output tokens, more output tokens than max_tokens=%s "
            "allowed; charging all of them",
            guarded.hold.tenant,
            usage.model,
            usage.output_tokens,
            guarded.max_tokens,
        )
    return reservations.settle(guarded.cycles, guarded.hold, cost, usage)


class _StreamBody:
    """The response body of a stream; closing it settles the hold even if it never ran.

    A server closes the body when the client is gone; one that goes before the first
    byte is sent never starts the generator, whose own cleanup would then never run.
    """

    def __init__(self, run: _StreamRun, first: str | None) -> None:
        self._run = run
        self._events = run.events(first)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        if not self._run.guarded.hold.settled:
            self._run.close_provider()
            self._run.settle()


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
