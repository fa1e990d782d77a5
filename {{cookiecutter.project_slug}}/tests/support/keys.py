"""The secrets test callers and test Cycles tenants present, derived from their names."""

from __future__ import annotations


def caller_key(tenant: str) -> str:
    """The API key a test caller presents for ``tenant`` (api_key auth)."""
    return f"caller-key-{tenant}"


def cycles_key(cycles_tenant: str) -> str:
    """The Cycles runtime API key of ``cycles_tenant`` on the test server."""
    return f"test-cycles-key-{cycles_tenant}"
