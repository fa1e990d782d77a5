"""The Cycles protocol as data: request validation (runtime and admin), query parameters,
scopes, permissions, errors and the wire's amounts and timestamps.

No I/O and nothing of the ledger or the HTTP layer: both of those build on this.
"""
