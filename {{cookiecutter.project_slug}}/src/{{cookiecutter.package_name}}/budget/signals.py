"""What the budget code tells whoever listens: holds taken, refused, settled, given back.

The budget code never calls the request log or the metrics; it sends these signals
(blinker, as Flask's own signals) and observability/ subscribes. The sender is the app
whose budget it is, so a subscriber connects with ``sender=app`` and hears only its own
app: tests run many apps in one process.

Each signal is sent with keyword arguments only:

- ``reserved``: ``hold`` (a :class:`~.holds.Hold`; ``hold.mode`` says whether anything
  is held: enforce, shadow, unguarded).
- ``refused``: ``route``, ``tenant``, ``estimate`` and ``error`` (the ApiError the caller
  gets: a denial 402, a rate limit 429, Cycles failing 5xx).
- ``settled``: ``hold``, ``usage``, ``settlement``: the call was charged.
- ``released``: ``hold``: it went back whole, nothing was charged.
- ``settled_later``: ``tenant``, ``outcome``, ``uncharged``: what the settler did away
  from any request (``recovered`` a stream of a worker that died, or found spend the
  budget could not take: ``uncharged`` USD microcents).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

reserved = _signals.signal("budget-reserved")
refused = _signals.signal("budget-refused")
settled = _signals.signal("budget-settled")
released = _signals.signal("budget-released")
settled_later = _signals.signal("budget-settled-later")
