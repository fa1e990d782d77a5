"""The Cycles admin API as ``flask cycles`` uses it: one request helper and the calls
that provision tenants, runtime API keys and budgets.

Requests have exactly the reference admin API's shapes (cycles-server-admin, port 7979), so
the same commands provision the embedded development ledger and a real Cycles stack. Any
failure becomes a one-line :class:`click.ClickException`, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import click
import httpx

from localcycles import RUNTIME_PERMISSIONS

from .pricing import UNIT

HTTP_TIMEOUT_S = 10.0

Json = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A Cycles HTTP API (admin or runtime) and the header that authenticates to it."""

    url: str
    headers: Mapping[str, str]

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        params: Mapping[str, str] | None = None,
        accept: Iterable[int] = (200, 201),
    ) -> tuple[int, Json]:
        """Send one request; any failure becomes a one-line error, never a traceback."""
        where = f"{method} {self.url}{path}"
        try:
            response = httpx.request(
                method,
                self.url + path,
                json=body,
                params=params,
                headers=dict(self.headers),
                timeout=HTTP_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise click.ClickException(f"{where}: cannot reach the server ({exc})") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        if response.status_code not in accept:
            error = payload.get("error") or response.reason_phrase
            message = payload.get("message") or response.text[:200]
            raise click.ClickException(
                f"{where} failed: HTTP {response.status_code} {error}: {message}"
            )
        return response.status_code, payload


def key_works(url: str, key: str, cycles_tenant: str) -> bool:
    """Whether the Cycles server at ``url`` takes ``key`` as ``cycles_tenant``'s key."""
    runtime = Endpoint(url, {"X-Cycles-API-Key": key})
    status, _ = runtime.call(
        "GET", "/v1/balances", params={"tenant": cycles_tenant}, accept=(200, 401, 403)
    )
    return status == 200


def create_tenant(admin: Endpoint, tenant_id: str) -> None:
    status, _ = admin.call(
        "POST", "/v1/admin/tenants", body={"tenant_id": tenant_id, "name": tenant_id}
    )
    click.echo(f"tenant {tenant_id}: {'created' if status == 201 else 'exists'}")


def create_api_key(admin: Endpoint, tenant_id: str, name: str) -> str:
    _, key = admin.call(
        "POST",
        "/v1/admin/api-keys",
        body={"tenant_id": tenant_id, "name": name, "permissions": list(RUNTIME_PERMISSIONS)},
    )
    secret = key.get("key_secret")
    if not isinstance(secret, str) or not secret:
        raise click.ClickException(f"the admin API returned no key_secret for {tenant_id!r}")
    return secret


def create_budget(admin: Endpoint, tenant_id: str, scope: str, microcents: int) -> None:
    status, payload = admin.call(
        "POST",
        "/v1/admin/budgets",
        body={
            "tenant_id": tenant_id,
            "scope": scope,
            "unit": UNIT,
            "allocated": {"amount": microcents, "unit": UNIT},
        },
        accept=(201, 409),
    )
    if status == 409 and payload.get("error") != "DUPLICATE_RESOURCE":
        raise click.ClickException(
            f"budget {scope}: HTTP 409 {payload.get('error')}: {payload.get('message')}"
        )
    # An existing budget is left as it is: re-running provisioning never resets spend.
    click.echo(f"budget {scope}: {'created' if status == 201 else 'exists (unchanged)'}")
