"""Webhook events of the embedded server: subscriptions (the admin API's), budget threshold
detection after a change, and signed delivery with retries from a background thread.

It sits between ``ledger`` and ``http``: the HTTP layer tells :class:`emitter.Emitter` which
tenant's budgets changed after the ledger's transaction; nothing here runs inside one.
"""
