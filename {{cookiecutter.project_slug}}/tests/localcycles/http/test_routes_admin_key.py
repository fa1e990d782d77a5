"""The admin key is compared in constant time (a spy on the comparison: timing cannot show it)."""

from __future__ import annotations

import hmac

import httpx
import pytest

from localcycles.http import routes
from support.localcycles_kit import LC_ADMIN_KEY


@pytest.mark.parametrize("presented", [LC_ADMIN_KEY, "wrong", LC_ADMIN_KEY[:-1]])
def test_the_admin_key_goes_through_compare_digest(
    lc_http: httpx.Client, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(routes.hmac, "compare_digest", spy)
    response = lc_http.get("/v1/admin/tenants", headers={"X-Admin-API-Key": presented})
    assert response.status_code == (200 if presented == LC_ADMIN_KEY else 401)
    assert (presented.encode(), LC_ADMIN_KEY.encode()) in compared
