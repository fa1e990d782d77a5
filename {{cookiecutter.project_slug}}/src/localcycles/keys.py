"""Tenants, API keys and authentication: the part of the ledger that says who is calling.

Only a SHA-256 hash of each key is stored, with a short prefix for people to recognise it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import wire
from .admin_requests import ApiKeySpec, TenantSpec, api_key_spec, tenant_spec
from .db import Database
from .errors import conflict
from .rows import dumps, require_tenant

Json = dict[str, Any]
Clock = Callable[[], int]

#: How long an accepted key is trusted without looking it up again (ms).
AUTH_CACHE_MS = 1000


@dataclass(frozen=True)
class Principal:
    """An accepted API key: its tenant and what it may do."""

    tenant: str
    permissions: frozenset[str]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_prefix(secret: str) -> str:
    """What is stored and shown of a key: at most 6 characters, less than half of it."""
    return secret[: min(6, len(secret) // 2 - 1)]


class KeyStore:
    """Tenants, API keys and authentication (a part of ``LocalLedger``)."""

    db: Database
    clock: Clock

    def __init__(self) -> None:
        # Presented API key -> (principal, valid until ms); only keys the ledger accepted.
        self._auth_cache: dict[str, tuple[Principal, int]] = {}

    # ------------------------------------------------------------------ tenants

    def create_tenant(self, tenant_id: str, name: str | None = None) -> tuple[Json, bool]:
        """Create a tenant (idempotent). Returns (Tenant, created)."""
        return self.add_tenant(tenant_spec(tenant_id, name))

    def add_tenant(self, spec: TenantSpec) -> tuple[Json, bool]:
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO tenants (tenant_id, name, created_at_ms) VALUES (?, ?, ?)",
                (spec.tenant_id, spec.name, self.clock()),
            )
            row = conn.execute(
                "SELECT * FROM tenants WHERE tenant_id = ?", (spec.tenant_id,)
            ).fetchone()
        return _tenant(row), cur.rowcount == 1

    def list_tenants(self) -> list[Json]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM tenants ORDER BY tenant_id").fetchall()
        return [_tenant(r) for r in rows]

    # ------------------------------------------------------------------ keys

    def create_api_key(
        self,
        tenant_id: str,
        key: str | None = None,
        *,
        name: str = "default",
        permissions: Sequence[str] | None = None,
        expires_at_ms: int | None = None,
    ) -> str:
        """Register an API key for ``tenant_id`` and return the secret (generated if None).

        Permissions default to ``RUNTIME_PERMISSIONS`` (no budget administration).
        Re-registering a key for the same tenant re-activates it with the given permissions;
        the same key for another tenant is 409 DUPLICATE_RESOURCE.
        """
        spec = api_key_spec(
            tenant_id, key, name=name, permission_list=permissions, expires_at_ms=expires_at_ms
        )
        return str(self.issue_api_key(spec)["key_secret"])

    def issue_api_key(self, spec: ApiKeySpec) -> Json:
        """Store the key of ``spec``; returns the admin API's ApiKeyCreateResponse."""
        secret = spec.secret or "cyc_live_" + secrets.token_urlsafe(32)
        digest = hash_key(secret)
        now = self.clock()
        key_id = "key_" + uuid.uuid4().hex[:16]
        perms = dumps(list(spec.permissions))
        with self.db.write() as conn:
            require_tenant(conn, spec.tenant_id)
            row = conn.execute(
                "SELECT key_id, tenant_id, created_at_ms FROM api_keys WHERE key_hash = ?",
                (digest,),
            ).fetchone()
            if row is not None and row["tenant_id"] != spec.tenant_id:
                raise conflict("DUPLICATE_RESOURCE", "API key already registered")
            if row is None:
                conn.execute(
                    "INSERT INTO api_keys (key_hash, key_id, key_prefix, tenant_id, name, "
                    "permissions, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        digest,
                        key_id,
                        key_prefix(secret),
                        spec.tenant_id,
                        spec.name,
                        perms,
                        now,
                        spec.expires_at_ms,
                    ),
                )
            else:
                key_id, now = row["key_id"], row["created_at_ms"]
                conn.execute(
                    "UPDATE api_keys SET status = 'ACTIVE', permissions = ?, expires_at_ms = ?, "
                    "key_prefix = ? WHERE key_hash = ?",
                    (perms, spec.expires_at_ms, key_prefix(secret), digest),
                )
        self._auth_cache.pop(secret, None)
        out: Json = {
            "key_id": key_id,
            "key_secret": secret,
            "key_prefix": key_prefix(secret),
            "tenant_id": spec.tenant_id,
            "permissions": list(spec.permissions),
            "created_at": wire.iso(now),
        }
        if spec.expires_at_ms is not None:
            out["expires_at"] = wire.iso(spec.expires_at_ms)
        return out

    def revoke_api_key(self, secret: str) -> bool:
        """Revoke a key by its secret; returns whether an active key was revoked."""
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET status = 'REVOKED' WHERE key_hash = ? AND status = 'ACTIVE'",
                (hash_key(secret),),
            )
        self._auth_cache.pop(secret, None)
        return cur.rowcount == 1

    def keep_secret(self, name: str, generate: Callable[[], str]) -> str:
        """A secret stored in the ledger file under ``name``, generated on first use.

        Processes that start together on one file agree: the first insert wins.
        """
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (f"secret:{name}", generate()),
            )
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (f"secret:{name}",)
            ).fetchone()
        return str(row["value"])

    # ------------------------------------------------------------------ authentication

    def authenticate(self, secret: str) -> str | None:
        """The tenant an API key belongs to, or None for an unknown/expired/revoked key."""
        principal = self.principal(secret)
        return principal.tenant if principal else None

    def principal(self, secret: str) -> Principal | None:
        """The accepted key's tenant and permissions, or None.

        Positive answers are cached for a second: a key lookup on every request costs more
        than the rest of a read, and keys are created far more often than changed. A cached
        key is not even hashed again.
        """
        now = self.clock()
        cached = self._auth_cache.get(secret)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT tenant_id, status, permissions, expires_at_ms FROM api_keys "
                "WHERE key_hash = ?",
                (hash_key(secret),),
            ).fetchone()
        if row is None or row["status"] != "ACTIVE":
            return None
        if row["expires_at_ms"] is not None and row["expires_at_ms"] <= now:
            return None
        principal = Principal(str(row["tenant_id"]), frozenset(json.loads(row["permissions"])))
        valid_until = min(now + AUTH_CACHE_MS, row["expires_at_ms"] or now + AUTH_CACHE_MS)
        self._auth_cache[secret] = (principal, valid_until)
        return principal


def _tenant(row: Any) -> Json:
    return {
        "tenant_id": row["tenant_id"],
        "name": row["name"],
        "status": row["status"],
        "created_at": wire.iso(row["created_at_ms"]),
    }
