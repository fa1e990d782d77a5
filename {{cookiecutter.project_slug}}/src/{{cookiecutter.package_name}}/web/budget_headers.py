"""The caller's budget in the headers of every guarded answer.

Each answer of an LLM route that got as far as the reservation (a JSON answer, a stream,
an error after it) and each budget denial (402) carries:

- ``X-Budget-Remaining``: what remains of the caller's own budget, in US dollars, as an
  exact decimal string (``"4.99873"``; see ``money.usd_text``);
- ``X-Budget-Remaining-Microcents``: the same as an integer of USD microcents, the unit
  the ledger counts in;
- ``X-Budget-Limit``: the budget's allocation (for this period, with a plan), in dollars;
- ``X-Budget-Reset``: when the period ends and spending starts again from zero (ISO 8601,
  UTC; the ``next_reset`` of ``GET /budget``); absent when the budget never resets.

Why these names: gateways report a caller's allowance in response headers named
remaining / limit / reset (OpenAI's and LiteLLM's ``x-ratelimit-remaining-requests``,
the IETF httpapi draft's ``RateLimit-Remaining``). Those names mean a rate limit, which
clients and proxies act on (back off, retry after the reset), and the IETF fields take
integers only; a money budget is neither. So the same three words under an ``X-Budget-``
prefix, the amount in dollars as OpenRouter and LiteLLM show budgets, with microcents
beside it for exact arithmetic. The reset is an instant, not seconds from now, so it is
the same string as ``/budget`` shows and needs no clock agreement.

The figures come from answers the guard has anyway, never from another Cycles call: the
reservation's answer carries the caller's balance with the hold taken out, and the call's
own charge is applied once it is settled. A JSON answer (settled before it is sent)
therefore shows what remains after the call; a stream's headers go out before it ends, so
they show what remains with its hold taken out, and its ``done`` event carries what
remains after its charge. A denial shows what Cycles' balances said when it denied
(budget/denials.py). Requests settling at the same time are not reflected: ``GET /budget``
reads the ledger itself.

The app sets no CORS headers, so a browser reads these only on its own origin. A gateway
that adds CORS must list them in ``Access-Control-Expose-Headers`` (the README says so).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, g

from .. import callers
from ..config import app_settings
from ..cycles import key_expiry
from ..errors import ApiError
from ..money import usd_text
from .budget_view import iso, tenant_period
from .calls import HeldCall
from .schemas import USD_PATTERN

REMAINING = "X-Budget-Remaining"
REMAINING_MICROCENTS = "X-Budget-Remaining-Microcents"
LIMIT = "X-Budget-Limit"
RESET = "X-Budget-Reset"
FITTED = "X-Budget-Fitted-Max-Tokens"
HEADERS = (REMAINING, REMAINING_MICROCENTS, LIMIT, RESET)

_USD = {"type": "string", "pattern": USD_PATTERN}
_WHEN = "On every answer of a guarded route after its reservation, and on a budget denial."
# Their entries in the API document (components/headers; openapi.py).
DOCUMENTED: dict[str, dict[str, Any]] = {
    REMAINING: {
        "description": "What remains of the caller's budget, in US dollars (exact decimal). "
        "A stream's shows its hold taken out; its `done` event says what remains after its "
        f"charge. {_WHEN}",
        "schema": _USD,
    },
    REMAINING_MICROCENTS: {
        "description": f"The same in USD microcents ($1 = 100,000,000). {_WHEN}",
        "schema": {"type": "string", "pattern": "^-?[0-9]+$"},
    },
    LIMIT: {
        "description": f"The caller's budget allocation, in US dollars. {_WHEN}",
        "schema": _USD,
    },
    RESET: {
        "description": "When the budget's period ends and its spending starts again from "
        "zero (ISO 8601, UTC). Absent when the budget never resets.",
        "schema": {"type": "string", "format": "date-time"},
    },
    FITTED: {
        "description": "The lower max_tokens the budget paid for, when the call was fitted "
        "to it (FIT_TO_BUDGET_MIN_TOKENS; the body's requested_max_tokens is what was asked).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}

_CALL = "budget_headers_call"
_DENIAL = "budget_headers_denial"


def note_call(call: HeldCall) -> None:
    """The request's guarded call: its headers are computed from it when it answers."""
    setattr(g, _CALL, call)


def note_denial(error: ApiError) -> None:
    """The request's reservation was refused with ``error`` (its details name the balance)."""
    setattr(g, _DENIAL, error)


def add_headers(response: Response) -> Response:
    """After-request hook of the guarded routes: once per request, whatever the answer."""
    call: HeldCall | None = g.get(_CALL)
    if call is not None and call.call.requested_max_tokens is not None:
        response.headers[FITTED] = str(call.max_tokens)
    figures = _figures()
    if figures is None:
        return response
    remaining, limit = figures
    response.headers[REMAINING] = usd_text(remaining)
    response.headers[REMAINING_MICROCENTS] = str(remaining)
    if limit is not None:
        response.headers[LIMIT] = usd_text(limit)
    reset = next_reset(callers.current_tenant())
    if reset is not None:
        response.headers[RESET] = iso(reset)
    return response


def next_reset(tenant: str) -> datetime | None:
    _, _, end = tenant_period(app_settings(), tenant, key_expiry.now())
    return end


def _figures() -> tuple[int, int | None] | None:
    """(remaining, limit) in USD microcents, or None when no answer named them."""
    call: HeldCall | None = g.get(_CALL)
    if call is not None:
        remaining = call.remaining_budget()
        balance = call.hold.balance
        if remaining is None or balance is None:
            return None
        return remaining, balance.allocated
    denial: ApiError | None = g.get(_DENIAL)
    if denial is not None:
        left = denial.details.get("remaining_microcents")
        limit = denial.details.get("limit_microcents")
        if isinstance(left, int):
            return left, limit if isinstance(limit, int) else None
    return None
