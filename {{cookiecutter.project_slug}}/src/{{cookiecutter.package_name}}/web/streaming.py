"""A guarded call answered as server-sent events: the stream's run and its response body.

The first delta is awaited before the response starts, so a provider that fails at once
still gets a JSON 502; after that, failures arrive as an ``error`` event. The hold is
extended by the app's heartbeat while the stream runs (hold_keeper.py), and the stream ends
early if an extension fails. A client that hangs up is charged for what was generated. A
stream whose client stops reading is ended by the heartbeat: after ``STREAM_WRITE_TIMEOUT``
on one write, or before its hold could lapse, it is charged what it produced and its
connection is cut, since the stream's own code does not run while the server waits on the
socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from typing import Any

from flask import Response, request

from ..budget import pricing, reservations
from ..budget.hold_keeper import EndReason, StreamWrites
from ..budget.holds import Usage
from ..errors import ApiError
from ..llm import ProviderError, StreamProgress
from ..money import usd_text
from . import sse
from .calls import HeldCall, ms_since

log = logging.getLogger(__name__)

# A stream's first record covers this many output tokens (then doubles as they are passed).
FIRST_RECORD_TOKENS = 64


def respond(held: HeldCall) -> Response:
    """Start ``held`` as a stream; from the returned response on, its body settles the hold.

    If this raises, the hold is still the caller's to release (or was settled here, when
    the provider failed after it started).
    """
    held.cycles.keeper.watch(held.hold)
    run = StreamRun(held)
    first = run.first_delta()
    run.record_progress()
    return sse.response(StreamBody(run, first, sse.connection_cutter(request.environ)))


class StreamRun:
    """The life of one stream: deltas out, then the commit of what was generated."""

    def __init__(self, held: HeldCall) -> None:
        self.held = held
        self.progress = StreamProgress()
        self.started = time.monotonic()
        self.recorded_tokens = 0  # output tokens the stream's record on disk covers
        call = held.call
        self.deltas = held.provider.stream(
            prompt=call.prompt,
            max_tokens=held.max_tokens,
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
                self.held.release("provider_error")
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
            self.held.cycles.keeper.unfollow(writes)

    def _events(self, first: str | None, writes: StreamWrites) -> Generator[bytes, None, None]:
        error: ApiError | None = None
        try:
            if not writes.taken():  # the server starts the body
                error = _ended_by_keeper(writes)
            elif first is not None:
                sent = yield from _send(writes, sse.delta(first))
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
        keeper, hold = self.held.cycles.keeper, self.held.hold
        cutoff = self.held.cycles.stream_cutoff_s()  # from settings: the same all stream long
        while True:
            if hold.held and keeper.time_left(hold) < cutoff:
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
            if not (yield from _send(writes, sse.delta(delta))):
                return _ended_by_keeper(writes)

    def end_by_keeper(self, reason: EndReason) -> None:
        """The heartbeat ended this stream while the server waited on one of its writes.

        Runs on the heartbeat's thread. The stream's code is parked at that write and
        produces nothing more (StreamWrites.taken), so what it produced is final: charge it.
        """
        hold = self.held.hold
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
        progress, max_tokens = self.progress, self.held.max_tokens
        generated = progress.output_tokens  # bounded as _usage bounds it when not counted
        if generated is None:
            generated = min(progress.text_bytes, max_tokens)
        if generated <= self.recorded_tokens:
            return
        ahead = max(2 * self.recorded_tokens, FIRST_RECORD_TOKENS)
        self.recorded_tokens = max(generated, min(ahead, max_tokens))
        usage = replace(self._usage(), output_tokens=self.recorded_tokens)
        reservations.record_stream(self.held.cycles, self.held.hold, self.held.cost(usage), usage)

    def settle(self) -> int:
        usage = self._usage()
        cost = self.held.cost(usage)
        self.held.settle(cost, usage)
        return cost

    def _usage(self) -> Usage:
        """The provider's own usage when it reported it; otherwise an upper bound."""
        progress, call = self.progress, self.held.call
        input_tokens = progress.input_tokens
        cached, written = progress.cached_input_tokens, progress.cache_write_tokens
        if input_tokens is None:
            input_tokens, cached, written = pricing.max_input_tokens(*call.texts()), 0, 0
        output_tokens = progress.output_tokens
        if output_tokens is None:
            # Cut short before the provider counted: every token is at least one byte,
            # and none past max_tokens.
            output_tokens = min(progress.text_bytes, self.held.max_tokens)
        return Usage(
            input_tokens,
            output_tokens,
            progress.model or self.held.provider.model,
            ms_since(self.started),
            cached_input_tokens=cached,
            cache_write_tokens=written,
        )

    def _summary(self, cost: int) -> dict[str, Any]:
        usage = self._usage()
        summary: dict[str, Any] = {
            "model": usage.model,
            "max_tokens": self.held.max_tokens,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "cost_usd_microcents": cost,
        }
        if self.held.call.requested_max_tokens is not None:
            summary["requested_max_tokens"] = self.held.call.requested_max_tokens  # fitted
        # The headers went out before the charge; what remains after it (budget_headers.py).
        remaining = self.held.remaining_budget()
        if remaining is not None:
            summary["remaining_microcents"] = remaining
            summary["remaining_usd"] = usd_text(remaining)
        return summary

    def _generated_nothing(self) -> bool:
        return self.progress.text_bytes == 0 and not self.progress.output_tokens

    def close_provider(self) -> None:
        close = getattr(self.deltas, "close", None)
        if close is not None:
            close()


class StreamBody:
    """The response body of a stream; closing it settles the hold even if it never ran.

    A server closes the body when the client is gone; one that goes before the first
    byte is sent never starts the generator, whose own cleanup would then never run.
    """

    def __init__(self, run: StreamRun, first: str | None, cut: Callable[[], None] | None) -> None:
        self._run = run
        keeper = run.held.cycles.keeper
        # From here the server owns the stream: it is waiting to be written.
        self._writes = keeper.follow(run.held.hold, run.end_by_keeper, cut)
        self._events = run.events(first, self._writes)

    def __iter__(self) -> Iterator[bytes]:
        return self._events

    def close(self) -> None:
        self._events.close()
        self._run.held.cycles.keeper.unfollow(self._writes)  # if it never started
        if not self._run.held.hold.settled:
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
