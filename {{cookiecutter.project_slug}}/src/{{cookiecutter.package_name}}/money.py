"""Money in the app's one unit: integer US dollar microcents ($1 = 100,000,000).

Every amount the app sends Cycles, keeps on disk or shows an operator is counted in whole
microcents, so no sum drifts through floating point. Dollars come in (settings, commands)
and go out (balances, command output) only through the two functions here.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from runcycles import Unit

# The Cycles unit of every amount the app sends (reservations, commits, events, budgets).
UNIT = Unit.USD_MICROCENTS.value
MICROCENTS_PER_USD = 100_000_000
USD_DECIMAL_PLACES = 8  # one microcent


def usd_to_microcents(text: str) -> int:
    """``"5.00"`` (US dollars, at most 8 decimals, not negative) as integer microcents.

    Raises ValueError with a message fit for the person who typed ``text``.
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount of US dollars like 5.00") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not an amount of US dollars like 5.00")
    microcents = value * MICROCENTS_PER_USD
    if microcents != microcents.to_integral_value():
        raise ValueError(f"{text!r} has more than {USD_DECIMAL_PLACES} decimals (1 microcent)")
    return int(microcents)


def format_usd(microcents: int) -> str:
    """``$7.50``: whole cents as money, smaller fractions with every significant digit."""
    shown = usd_text(microcents)
    return f"-${shown[1:]}" if shown.startswith("-") else f"${shown}"


def usd_text(microcents: int) -> str:
    """``microcents`` as an exact decimal string of US dollars, for JSON and headers.

    One rule, and no rounding: a microcent is exactly 0.00000001 USD, so every amount has
    an exact decimal form. At least two decimals (``"5.00"``), more only when the amount
    has them (``"0.012345"``, ``"0.00000001"``), a ``-`` for a negative amount (debt). A
    string, never a float: a float cannot hold most of these values.
    """
    dollars = Decimal(abs(microcents)) / MICROCENTS_PER_USD
    shown = f"{dollars:.2f}" if dollars == round(dollars, 2) else f"{dollars.normalize():f}"
    return f"{'-' if microcents < 0 else ''}{shown}"
