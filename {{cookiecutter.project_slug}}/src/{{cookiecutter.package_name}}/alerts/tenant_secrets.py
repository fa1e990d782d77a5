"""Tenants' alert signing secrets, kept so that the alerts file alone cannot sign.

With ``BUDGET_ALERT_SIGNING_KEY`` set, a tenant's secret is derived, never stored: the
store keeps a random nonce and the key's fingerprint, and the secret is
HMAC-SHA256(key, tenant and nonce), computed again whenever an alert is signed. Someone
who reads ``alerts.sqlite3`` (a backup, a shared volume) learns no secret; they would
need the key too, which lives only in the app's settings.

Changing the key changes every derived secret: an alert stored under the old key's
fingerprint is not signed with the new one (the tenant would refuse it); it is logged,
and the tenant PUTs its URL again for a new secret. Without the key, secrets are stored as
they are (protected only by the file's mode, 0600), as before the setting existed; a
stored secret keeps working after the key is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_secrets
from dataclasses import dataclass

from .signatures import SECRET_PREFIX, new_secret

# What the store holds for a derived secret: DERIVED + fingerprint + ":" + nonce.
DERIVED = "derived:"


@dataclass(frozen=True)
class TenantSecrets:
    key: str | None  # BUDGET_ALERT_SIGNING_KEY

    def issue(self, tenant: str) -> tuple[str, str]:
        """A new secret for ``tenant``: (what the tenant is shown, what the store keeps)."""
        if self.key is None:
            secret = new_secret()
            return secret, secret
        nonce = random_secrets.token_urlsafe(16)
        return _derive(self.key, tenant, nonce), f"{DERIVED}{_fingerprint(self.key)}:{nonce}"

    def signing_secret(self, tenant: str, stored: str) -> str | None:
        """The secret that signs ``tenant``'s alerts, from what the store keeps; None when
        it was derived from a key this app no longer has."""
        if not stored.startswith(DERIVED):
            return stored
        fingerprint, _, nonce = stored[len(DERIVED) :].partition(":")
        if self.key is None or not hmac.compare_digest(fingerprint, _fingerprint(self.key)):
            return None
        return _derive(self.key, tenant, nonce)


def _derive(key: str, tenant: str, nonce: str) -> str:
    digest = hmac.new(key.encode(), f"alert-secret|{tenant}|{nonce}".encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def _fingerprint(key: str) -> str:
    """Names the key (which key derived a secret) without revealing it."""
    return hmac.new(key.encode(), b"alert-secret-key-fingerprint", hashlib.sha256).hexdigest()[:16]
