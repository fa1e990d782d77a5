"""The admin API's webhook subscriptions (the subset the app uses): create, list, get and
delete, under the admin key, with the reference's shapes (cycles-server-admin
``WebhookAdminController``): ``POST /v1/admin/webhooks[?tenant_id=]`` answers 201
``{subscription, signing_secret}`` (the secret only there), ``GET`` answers
``{subscriptions, has_more}``, ``DELETE /v1/admin/webhooks/{id}`` answers 204."""

from __future__ import annotations

from typing import Any

from ..events.store import Subscription, WebhookStore
from ..ledger.local_ledger import Clock
from ..protocol import admin_requests, wire
from ..protocol.errors import not_found
from ..protocol.validation import parse_json
from ..protocol.webhook_requests import webhook_create
from .routes import Auth, Handler, Request, Response

Json = dict[str, Any]


def subscription_json(sub: Subscription) -> Json:
    out: Json = {
        "subscription_id": sub.subscription_id,
        "tenant_id": sub.tenant_id,
        "url": sub.url,
        "event_types": list(sub.event_types),
        "status": "ACTIVE",
        "disable_after_failures": 10,
        "consecutive_failures": 0,
        "created_at": wire.iso(sub.created_at_ms),
    }
    if sub.thresholds:
        out["thresholds"] = {"budget_utilization": list(sub.thresholds)}
    return out


class WebhookRoutes:
    def __init__(self, store: WebhookStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> dict[str, dict[str, tuple[Handler, Auth]]]:
        return {
            "/v1/admin/webhooks": {
                "POST": (self.create, Auth.ADMIN),
                "GET": (self.list_all, Auth.ADMIN),
            },
            "/v1/admin/webhooks/{id}": {
                "GET": (self.get, Auth.ADMIN),
                "DELETE": (self.delete, Auth.ADMIN),
            },
        }

    def create(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        spec = webhook_create(parse_json(req.body))
        owner = req.query.get("tenant_id")
        sub = self.store.create(
            admin_requests.tenant_id(owner) if owner else None, spec, self.clock()
        )
        return Response(201, {"subscription": subscription_json(sub), "signing_secret": sub.secret})

    def list_all(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        rows = self.store.subscriptions(req.query.get("tenant_id") or None)
        return Response(
            200, {"subscriptions": [subscription_json(s) for s in rows], "has_more": False}
        )

    def get(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        sub = self.store.get(args[0])
        if sub is None:
            raise not_found(f"Webhook subscription not found: {args[0][:128]}")
        return Response(200, subscription_json(sub))

    def delete(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        if not self.store.delete(args[0]):
            raise not_found(f"Webhook subscription not found: {args[0][:128]}")
        return Response(204, {})
