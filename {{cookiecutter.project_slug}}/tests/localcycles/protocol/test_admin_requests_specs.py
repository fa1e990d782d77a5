"""Admin request bodies turned into specs (the ledger executes them as they are)."""

from __future__ import annotations

import pytest

from localcycles.protocol import admin_requests
from localcycles.protocol.admin_requests import DEFAULT_KEY_LIFETIME_MS
from localcycles.protocol.errors import LedgerError
from localcycles.protocol.permissions import RUNTIME_PERMISSIONS

NOW_MS = 1_700_000_000_000


def test_key_validation_takes_the_secret_as_given() -> None:
    assert admin_requests.key_validation({"key_secret": " cyc_live_x "}) == " cyc_live_x "


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "auth_validate: missing required field(s) key_secret"),
        ({"key_secret": "\t \n"}, "auth_validate.key_secret must be a non-blank string"),
        ({"key_secret": ["cyc"]}, "auth_validate.key_secret must be a non-blank string"),
        ({"key_secret": "k", "extra": 1}, "auth_validate: unknown field(s) extra"),
    ],
)
def test_key_validation_refuses_as_the_reference_does(body: dict[str, object], words: str) -> None:
    with pytest.raises(LedgerError) as refused:
        admin_requests.key_validation(body)
    assert refused.value.status == 400 and refused.value.message == words


def test_an_api_key_lives_the_default_lifetime_with_the_runtime_permissions() -> None:
    spec = admin_requests.api_key({"tenant_id": "acme", "name": "app"}, NOW_MS)
    assert spec.expires_at_ms == NOW_MS + DEFAULT_KEY_LIFETIME_MS
    assert spec.permissions == RUNTIME_PERMISSIONS and spec.secret is None


def test_an_api_key_keeps_its_expiry_and_drops_repeated_permissions() -> None:
    body = {
        "tenant_id": "acme",
        "name": "app",
        "expires_at": "2030-01-01T00:00:00Z",
        "permissions": ["balances:read", "balances:read", "reservations:create"],
    }
    spec = admin_requests.api_key(body, NOW_MS)
    assert spec.expires_at_ms == 1_893_456_000_000
    assert spec.permissions == ("balances:read", "reservations:create")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"expires_at": "next week"}, "expires_at must be an ISO 8601 date-time"),
        ({"expires_at": 5}, "expires_at must be an ISO 8601 date-time"),
        ({"scope_filter": ["tenant:acme"]}, "scope_filter is not supported"),
        ({"key_secret": "short"}, "API key must be 8..512 printable ASCII"),
        ({"key_secret": "has a space"}, "API key must be 8..512 printable ASCII"),
        ({"permissions": ["balances:fly"]}, "Unrecognized permission: balances:fly"),
        ({"tenant_id": "Acme"}, "tenant_id must match"),
    ],
)
def test_a_bad_api_key_request_names_the_field(extra: dict[str, object], words: str) -> None:
    body: dict[str, object] = {"tenant_id": "acme", "name": "app", **extra}
    with pytest.raises(LedgerError, match=words):
        admin_requests.api_key(body, NOW_MS)


def test_a_scope_is_canonical_and_names_its_tenant() -> None:
    assert admin_requests.scope("Tenant:Acme/App:Chat") == ("tenant:acme/app:chat", "acme")
    with pytest.raises(LedgerError, match="invalid scope: scope must start with tenant"):
        admin_requests.scope("app:chat")


def test_a_funding_keeps_its_reason_and_metadata_and_refuses_metadata_not_an_object() -> None:
    query = {"scope": "tenant:acme", "unit": "USD_MICROCENTS"}
    body: dict[str, object] = {
        "operation": "CREDIT",
        "amount": {"unit": "USD_MICROCENTS", "amount": 5},
        "reason": "top-up",
        "metadata": {"ticket": "OPS-1"},
    }
    spec = admin_requests.funding(query, body)
    assert (spec.reason, spec.metadata) == ("top-up", {"ticket": "OPS-1"})
    with pytest.raises(LedgerError, match=r"funding\.metadata must be a JSON object"):
        admin_requests.funding(query, {**body, "metadata": ["OPS-1"]})


def test_a_funding_reason_is_bounded_only_by_its_length_as_the_reference_bounds_it() -> None:
    """cycles-server-admin's BudgetFundingRequest: ``@Size(max = 512)`` on ``reason`` (an
    empty one is accepted), ``@Size(min = 1, max = 256)`` on ``idempotency_key``."""
    query = {"scope": "tenant:acme", "unit": "USD_MICROCENTS"}
    body: dict[str, object] = {
        "operation": "CREDIT",
        "amount": {"unit": "USD_MICROCENTS", "amount": 5},
    }
    assert admin_requests.funding(query, {**body, "reason": ""}).reason == ""
    assert admin_requests.funding(query, {**body, "reason": "r" * 512}).reason == "r" * 512
    with pytest.raises(LedgerError, match=r"funding\.reason must be a string of 0\.\.512"):
        admin_requests.funding(query, {**body, "reason": "r" * 513})
    with pytest.raises(LedgerError, match=r"funding\.idempotency_key must be a string of 1\."):
        admin_requests.funding(query, {**body, "idempotency_key": ""})
