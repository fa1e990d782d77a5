"""The ledger: every operation as one SQLite transaction over a shared file.

``local_ledger.LocalLedger`` is assembled from ``keys`` (tenants, API keys, authentication),
``budget_admin`` (budgets and funding), ``lifecycle`` (reserve, commit, release, extend,
decide, events) and ``reads`` (queries), over the SQL helpers in ``rows`` and ``db``, the
arithmetic in ``accounting`` and the wire shapes of budgets in ``balances``; ``retention``
prunes what is past the replay window. Receives validated requests only (``protocol``).
"""
