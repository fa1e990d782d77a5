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
stream runs, and the stream ends early if an extension fails. A stream whose client stops
reading is ended by the heartbeat (heartbeat.py): after ``STREAM_WRITE_TIMEOUT`` on one
write, or before its hold could lapse, it is charged what it produced and its connection
is cut, since the stream's own code does not run while the server waits on the socket.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask import Response, request

from .. import callers, state
from ..budget import pricing, reservations
from ..budget.hold_keeper import EndReason, StreamWrites
from ..budget.provider_deadlines import Overran
from ..config import CYCLES_SAFETY_MARGIN_MS, Settings
from ..cycles.clients import CyclesClients
from ..errors import ApiError
from ..llm import Completion, LLMProvider, ProviderError, StreamProgress
from ..observability import request_log
from . import sse
from .bodies import json_body

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

    def estimate(self, prices: pricing.ModelPrices) -> int:
        """The most this call can cost at ``prices``, in USD microcents: what gets reserved."""
        return pricing.estimate(*self.texts(), max_tokens=self.max_tokens, prices=prices)


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
            settings = state.settings()
            call = parse(json_body(), settings)
            cycles = state.cycles()
            tenant, estimate = callers.current_tenant(), call.estimate(settings.llm_prices)
            try:
                if cycles.settings.cycles_mode == "enforce":
                    # Never reserve ahead of this tenant's own charges still on their way.
                    cycles.settler.catch_up(tenant)
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
        cost = pricing.cost(
            completion.input_tokens,
            completion.output_tokens,
            prices=self.cycles.settings.llm_prices,
        )
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
        run.record_progress()
        self._streaming = True  # from here on the stream's body settles the hold
        return sse.response(_StreamBody(run, first, sse.connection_cutter(request.environ)))

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
# A stream's first record covers this many output tokens (then doubles as they are passed).
FIRST_RECORD_TOKENS = 64


class _StreamRun:
    """The life of one stream: deltas out, then the commit of what was generated."""

    def __init__(self, guarded: GuardedCall) -> None:
        self.guarded = guarded
        self.progress = StreamProgress()
        self.started = time.monotonic()
        self.recorded_tokens = 0  # output tokens the stream's record on disk covers
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

    def events(self, first: str | None, writes: StreamWrites) -> Generator[bytes, None, None]:
        try:
            yield from self._events(first, writes)
        finally:
            self.guarded.cycles.keeper.unfollow(writes)

    def _events(self, first: str | None, writes: StreamWrites) -> Generator[bytes, None, None]:
        error: ApiError | None = None
        try:
            if not writes.taken():  # the server starts the body
                error = _ended_by_keeper(writes)
            elif first is not None:
                sent = yield from _send(writes, sse.event("delta", {"text": first}))
                error = (yield from self._rest(writes)) if sent else _ended_by_keeper(writes)
        finally:
            # Also reached when the client hangs up (GeneratorExit at a yield): the
            # provider is stopped and what it generated until then is charged.
            self.close_provider()
            cost = self.settle()
        if error is not None:
            event = {"error": error.error, "message": error.message}
            yield from _send(writes, sse.event("error", event))
            return
        yield from _send(writes, sse.event("done", self._summary(cost)))

    def _rest(self, writes: StreamWrites) -> Generator[bytes, None, ApiError | None]:
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
            self.record_progress()
            if not (yield from _send(writes, sse.event("delta", {"text": delta}))):
                return _ended_by_keeper(writes)

    def end_by_keeper(self, reason: EndReason) -> None:
        """The heartbeat ended this stream while the server waited on one of its writes.

        Runs on the heartbeat's thread. The stream's code is parked at that write and
        produces nothing more (StreamWrites.taken), so what it produced is final: charge it.
        """
        hold = self.guarded.hold
        log.warning(
            "Stream of tenant %s on %s ended: %s",
            hold.tenant,
            hold.route,
            "its client stopped reading (STREAM_WRITE_TIMEOUT)"
            if reason == "write_stalled"
            else "its budget hold could not be extended and is about to lapse",
        )
        if not hold.settled:
            self.settle()

    def record_progress(self) -> None:
        """Before more output goes out, keep on disk a charge of at least what was sent, so
        a restarted app charges it if this process dies mid-stream (unsettled.py). The
        recorded output doubles each time the stream passes it: a few writes per stream."""
        progress, max_tokens = self.progress, self.guarded.max_tokens
        generated = progress.output_tokens  # bounded as _usage bounds it when not counted
        if generated is None:
            generated = min(progress.text_bytes, max_tokens)
        if generated <= self.recorded_tokens:
            return
        ahead = max(2 * self.recorded_tokens, FIRST_RECORD_TOKENS)
        self.recorded_tokens = max(generated, min(ahead, max_tokens))
        usage = replace(self._usage(), output_tokens=self.recorded_tokens)
        prices = self.guarded.cycles.settings.llm_prices
        cost = pricing.cost(usage.input_tokens, usage.output_tokens, prices=prices)
        reservations.record_stream(self.guarded.cycles, self.guarded.hold, cost, usage)

    def settle(self) -> int:
        usage = self._usage()
        prices = self.guarded.cycles.settings.llm_prices
        cost = pricing.cost(usage.input_tokens, usage.output_tokens, prices=prices)
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

    def __init__(self, run: _StreamRun, first: str | None, cut: Callable[[], None] | None) -> None:
        self._run = run
        keeper = run.guarded.cycles.keeper
        # From here the server owns the stream: it is waiting to be written.
        self._writes = keeper.follow(run.guarded.hold, run.end_by_keeper, cut)
        self._events = run.events(first, self._writes)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._run.guarded.cycles.keeper.unfollow(self._writes)  # if it never started
        if not self._run.guarded.hold.settled:
            self._run.close_provider()
            self._run.settle()


def _send(writes: StreamWrites, chunk: bytes) -> Generator[bytes, None, bool]:
    """Hand ``chunk`` to the server; False if the heartbeat ended the stream meanwhile."""
    writes.handing_over()
    yield chunk
    return writes.taken()


def _ended_by_keeper(writes: StreamWrites) -> ApiError:
    if writes.ended == "hold_lapsing":
        return ApiError(503, "budget_hold_lapsing", "The budget hold could not be extended.")
    return ApiError(503, "stream_stalled", "The stream ended: its client stopped reading.")


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
