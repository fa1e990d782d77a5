"""``POST /v1/auth/validate``: the reference admin API's key lookup (admin key only).

Always 200 for a well-formed request: ``valid`` with the key's tenant, id, permissions and
expiry, or ``valid: false`` with the reason and the key's tenant ("" for an unknown key).
Optional fields are omitted, never null.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, FakeClock

ADMIN = {"X-Admin-API-Key": LC_ADMIN_KEY}
PATH = "/v1/auth/validate"


def validate(http: httpx.Client, secret: str) -> dict[str, object]:
    answer = http.post(PATH, json={"key_secret": secret}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_a_key_made_over_the_admin_api_is_described_as_it_was_made(
    lc_ledger: LocalLedger, lc_http: httpx.Client
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    made = lc_http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": LC_TENANT, "name": "app", "permissions": ["balances:read"]},
        headers=ADMIN,
    ).json()
    assert validate(lc_http, made["key_secret"]) == {
        "valid": True,
        "tenant_id": LC_TENANT,
        "key_id": made["key_id"],
        "permissions": ["balances:read"],
        "expires_at": made["expires_at"],
    }


def test_a_key_without_expiry_has_no_expires_at(
    lc_ledger: LocalLedger, lc_http: httpx.Client
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    secret = lc_ledger.create_api_key(LC_TENANT, permissions=[])
    answer = validate(lc_http, secret)
    assert answer["valid"] is True and answer["permissions"] == []
    assert "expires_at" not in answer and "reason" not in answer


def test_an_unknown_key_is_not_found_with_an_empty_tenant(lc_http: httpx.Client) -> None:
    assert validate(lc_http, "cyc_live_never_issued") == {
        "valid": False,
        "tenant_id": "",
        "reason": "KEY_NOT_FOUND",
    }


#: Ways a valid key stops being valid, by the reason the lookup then gives.
SPOILERS: dict[str, Callable[[LocalLedger, str, FakeClock], object]] = {
    "KEY_REVOKED": lambda ledger, secret, clock: ledger.revoke_api_key(secret),
    "KEY_EXPIRED": lambda ledger, secret, clock: clock.advance(1_001),
    "TENANT_SUSPENDED": lambda ledger, secret, clock: ledger.set_tenant_status(
        LC_TENANT, "SUSPENDED"
    ),
    "TENANT_CLOSED": lambda ledger, secret, clock: ledger.set_tenant_status(LC_TENANT, "CLOSED"),
}


@pytest.mark.parametrize("reason", sorted(SPOILERS))
def test_a_refused_key_names_the_reason_and_its_tenant(
    lc_ledger: LocalLedger, lc_http: httpx.Client, lc_clock: FakeClock, reason: str
) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    secret = lc_ledger.create_api_key(LC_TENANT, expires_at_ms=lc_clock.now_ms + 1_000)
    assert validate(lc_http, secret)["valid"] is True
    SPOILERS[reason](lc_ledger, secret, lc_clock)
    assert validate(lc_http, secret) == {"valid": False, "tenant_id": LC_TENANT, "reason": reason}


def test_only_the_admin_key_may_ask(lc_ledger: LocalLedger, lc_http: httpx.Client) -> None:
    lc_ledger.create_tenant(LC_TENANT)
    secret = lc_ledger.create_api_key(LC_TENANT)
    body = {"key_secret": secret}
    for headers in ({}, {"X-Cycles-API-Key": secret}, {"X-Admin-API-Key": "wrong"}):
        answer = lc_http.post(PATH, json=body, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"] == "UNAUTHORIZED"
    assert lc_http.get(PATH, headers=ADMIN).status_code == 405


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "missing required field(s) key_secret"),
        ({"key_secret": "   "}, "key_secret must be a non-blank string"),
        ({"key_secret": ""}, "key_secret must be a non-blank string"),
        ({"key_secret": None}, "key_secret must be a non-blank string"),
        ({"key_secret": 12345678}, "key_secret must be a non-blank string"),
        ({"key_secret": "cyc_live_x", "tenant_id": "acme"}, "unknown field(s) tenant_id"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(
    lc_http: httpx.Client, body: dict[str, object], words: str
) -> None:
    answer = lc_http.post(PATH, json=body, headers=ADMIN)
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_REQUEST" and words in answer.json()["message"]
