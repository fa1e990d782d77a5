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

from ..protocol import wire
from ..protocol.admin_requests import ApiKeySpec, TenantSpec, api_key_spec, tenant_spec
from ..protocol.errors import conflict
from .db import Database
from .rows import dumps, require_tenant

Json = dict[str, Any]
Clock = Callable[[], int]

#: How long an accepted key is trusted without looking it up again (ms).
AUTH_CACHE_MS = 1000
#: The reference's tenant statuses.
TENANT_STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")


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

    def set_tenant_status(self, tenant_id: str, status: str) -> None:
        """ACTIVE, SUSPENDED or CLOSED; a tenant that is not ACTIVE has its keys refused."""
        if status not in TENANT_STATUSES:
            raise ValueError(f"tenant status must be one of {', '.join(TENANT_STATUSES)}")
        with self.db.write() as conn:
            require_tenant(conn, tenant_id)
            conn.execute("UPDATE tenants SET status = ? WHERE tenant_id = ?", (status, tenant_id))
        self._auth_cache.clear()

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

        Permissions default to ``RUNTIME_PERMISSIONS`` (the reference's default list: no
        budget administration). Unlike the admin API, this convenience sets no expiry unless
        given one: the embedded ledger re-registers its own keys at every start.
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
        """The accepted key's tenant and permissions, or None (see ``check_key``)."""
        found = self.check_key(secret)
        return found if isinstance(found, Principal) else None

    def check_key(self, secret: str) -> Principal | str:
        """The accepted key's tenant and permissions, or why it is refused.

        The reasons are the reference's: ``KEY_NOT_FOUND``, ``KEY_REVOKED``,
        ``KEY_EXPIRED``, ``TENANT_NOT_FOUND``, ``TENANT_SUSPENDED``, ``TENANT_CLOSED``.
        Positive answers are cached for a second: a key lookup on every request costs more
        than the rest of a read, and keys are created far more often than changed. A cached
        key is not even hashed again.
        """
        now = self.clock()
        cached = self._auth_cache.get(secret)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = self._key_row(secret)
        refusal = _refusal(row, now)
        if refusal is not None:
            return refusal
        principal = Principal(str(row["tenant_id"]), frozenset(json.loads(row["permissions"])))
        # Never cached past the key's expiry: the first lookup after it looks again.
        expires = row["expires_at_ms"]
        ceiling = now + AUTH_CACHE_MS
        valid_until = ceiling if expires is None else min(ceiling, expires + 1)
        self._auth_cache[secret] = (principal, valid_until)
        return principal

    def validate_key(self, secret: str) -> Json:
        """The reference admin API's ApiKeyValidationResponse (``POST /v1/auth/validate``).

        Always an answer, never an error: ``valid`` with the key's tenant, id, permissions
        and expiry, or ``valid: false`` with the reason ``check_key`` gives (``tenant_id`` is
        the key's tenant, or "" for an unknown key). Optional fields are omitted. Keys are
        looked up by their hash, so the reference's INVALID_KEY (a known prefix with a wrong
        secret) is KEY_NOT_FOUND here. Never cached: an operator asks about a key once.
        """
        row = self._key_row(secret)
        refusal = _refusal(row, self.clock())
        if row is None or refusal is not None:
            tenant = str(row["tenant_id"]) if row is not None else ""
            return {"valid": False, "tenant_id": tenant, "reason": refusal}
        out: Json = {
            "valid": True,
            "tenant_id": row["tenant_id"],
            "key_id": row["key_id"],
            "permissions": json.loads(row["permissions"]),
        }
        if row["expires_at_ms"] is not None:
            out["expires_at"] = wire.iso(row["expires_at_ms"])
        return out

    def _key_row(self, secret: str) -> Any:
        """The key's row joined with its tenant's status, or None."""
        with self.db.read() as conn:
            return conn.execute(
                "SELECT k.key_id, k.tenant_id, k.status, k.permissions, k.expires_at_ms, "
                "t.status AS tenant_status FROM api_keys k "
                "LEFT JOIN tenants t ON t.tenant_id = k.tenant_id WHERE k.key_hash = ?",
                (hash_key(secret),),
            ).fetchone()


def _refusal(row: Any, now: int) -> str | None:
    """Why the key of ``row`` is refused at ``now`` (the reference's order), or None."""
    if row is None:
        return "KEY_NOT_FOUND"
    if row["status"] != "ACTIVE":
        return f"KEY_{row['status']}"
    # The reference refuses a key once the time is after its expiry: valid at the instant.
    if row["expires_at_ms"] is not None and now > row["expires_at_ms"]:
        return "KEY_EXPIRED"
    if row["tenant_status"] is None:
        return "TENANT_NOT_FOUND"
    if row["tenant_status"] != "ACTIVE":
        return f"TENANT_{row['tenant_status']}"
    return None


def _tenant(row: Any) -> Json:
    return {
        "tenant_id": row["tenant_id"],
        "name": row["name"],
        "status": row["status"],
        "created_at": wire.iso(row["created_at_ms"]),
    }
