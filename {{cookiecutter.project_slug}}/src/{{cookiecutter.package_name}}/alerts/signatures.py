"""HMAC-SHA256 signatures of webhook bodies, in and out.

In: the Cycles events service signs each delivery with the subscription's secret:
``X-Cycles-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` (runcycles/docs,
protocol/webhook-event-delivery-protocol.md; cycles-server-events ``PayloadSigner``).
Out: the app signs what it forwards to a tenant the same way, with the tenant's own secret,
under its own header names (a tenant's receiver verifies exactly as for Cycles).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CYCLES_SIGNATURE_HEADER = "X-Cycles-Signature"
CYCLES_EVENT_ID_HEADER = "X-Cycles-Event-Id"

ALERT_SIGNATURE_HEADER = "X-Budget-Alert-Signature"
ALERT_ID_HEADER = "X-Budget-Alert-Id"
ALERT_TYPE_HEADER = "X-Budget-Alert-Type"

SECRET_PREFIX = "whsec_"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is ``body``'s, compared in constant time."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())


def new_secret() -> str:
    """A tenant's signing secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)
