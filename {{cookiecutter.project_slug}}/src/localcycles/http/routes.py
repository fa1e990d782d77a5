"""Routing and request handling, independent of sockets: (method, path, headers, body) in,
(status, JSON, headers) out. Authentication, permissions, body parsing and validation live
here; the ledger receives validated requests only."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..events.emitter import Emitter
from ..ledger.budget_admin import BUDGET_SORT_FIELDS, budget_page
from ..ledger.keys import Principal
from ..ledger.local_ledger import LocalLedger
from ..ledger.rows import payload_hash
from ..protocol import admin_requests, queries, validation
from ..protocol.errors import LedgerError, forbidden, invalid, unauthorized
from ..protocol.permissions import REQUIRED, allows
from ..protocol.validation import parse_json

Json = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    status: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)


class Auth(Enum):
    """Who may call an endpoint (the reference servers' split)."""

    TENANT = "a tenant API key"
    EITHER = "a tenant API key or the admin key"
    ADMIN = "the admin key"
    PUBLIC = "anyone"


#: The reference runtime server's public health probes (no credentials).
HEALTH_ROUTES = ("/healthz", "/actuator/health/liveness", "/actuator/health/readiness")


#: ``tenant`` is the caller's tenant, None under the admin key.
Handler = Callable[[Request, str | None, list[str]], Response]

_RESERVATION = re.compile(r"^/v1/reservations/([^/]+)(?:/(commit|release|extend))?$")
_WEBHOOK = re.compile(r"^/v1/admin/webhooks/([^/]+)$")


def split_target(target: str) -> tuple[str, dict[str, str]]:
    path, _, query = target.partition("?")
    params: dict[str, str] = {}
    if not query:
        return path, params
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)  # first occurrence wins
    return path, params


class Api:
    """The HTTP surface of the local server: runtime protocol + admin provisioning."""

    def __init__(
        self,
        ledger: LocalLedger,
        admin_key: str | None,
        *,
        events: Emitter | None = None,
        extra_routes: dict[str, dict[str, tuple[Handler, Auth]]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.admin_key = admin_key
        # Told after each spend or funding (outside the ledger's transaction).
        self.events = events
        # route -> method -> (handler, who may call it)
        self._routes: dict[str, dict[str, tuple[Handler, Auth]]] = {
            "/v1/reservations": {
                "POST": (self.reserve, Auth.TENANT),
                "GET": (self.list_reservations, Auth.EITHER),
            },
            "/v1/reservations/{id}": {"GET": (self.get_reservation, Auth.EITHER)},
            "/v1/reservations/{id}/commit": {"POST": (self.commit, Auth.TENANT)},
            "/v1/reservations/{id}/release": {"POST": (self.release, Auth.EITHER)},
            "/v1/reservations/{id}/extend": {"POST": (self.extend, Auth.TENANT)},
            "/v1/decide": {"POST": (self.decide, Auth.TENANT)},
            "/v1/balances": {"GET": (self.balances, Auth.TENANT)},
            "/v1/events": {"POST": (self.event, Auth.TENANT)},
            **{route: {"GET": (self.health, Auth.PUBLIC)} for route in HEALTH_ROUTES},
            "/v1/admin/tenants": {
                "POST": (self.create_tenant, Auth.ADMIN),
                "GET": (self.list_tenants, Auth.ADMIN),
            },
            "/v1/admin/api-keys": {"POST": (self.create_api_key, Auth.ADMIN)},
            "/v1/admin/budgets": {
                "POST": (self.create_budget, Auth.EITHER),
                "GET": (self.list_budgets, Auth.EITHER),
                "PATCH": (self.update_budget, Auth.ADMIN),
            },
            "/v1/admin/budgets/fund": {"POST": (self.fund, Auth.EITHER)},
            "/v1/auth/validate": {"POST": (self.validate_key, Auth.ADMIN)},
            **(extra_routes or {}),
        }

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, req: Request) -> Response:
        route, args = self._route(req.path)
        methods = self._routes[route]
        if req.method not in methods:
            raise LedgerError(
                405,
                "INVALID_REQUEST",
                f"Method {req.method[:16]} not allowed",
                headers={"Allow": ", ".join(sorted(methods))},
            )
        handler, auth = methods[req.method]
        if auth is Auth.PUBLIC:
            return handler(req, None, args)
        tenant = self._authorize(req, route, auth)
        return handler(req, tenant, args)

    def _route(self, path: str) -> tuple[str, list[str]]:
        if path in self._routes:
            return path, []
        webhook = _WEBHOOK.match(path)
        if webhook is not None and "/v1/admin/webhooks/{id}" in self._routes:
            return "/v1/admin/webhooks/{id}", [unquote(webhook.group(1))[:128]]
        match = _RESERVATION.match(path)
        if match is None:
            raise LedgerError(404, "NOT_FOUND", f"No such endpoint: {path[:256]}")
        reservation_id = unquote(match.group(1))
        if len(reservation_id) > 128:
            raise invalid("reservation_id must be at most 128 characters")
        action = match.group(2)
        route = f"/v1/reservations/{{id}}/{action}" if action else "/v1/reservations/{id}"
        return route, [reservation_id]

    # ------------------------------------------------------------------ auth

    def _admin(self, req: Request) -> None:
        """Accept the admin key or answer 401 (the reference's messages)."""
        given = (req.headers.get("x-admin-api-key") or "").strip()
        if not given:
            raise unauthorized("Missing X-Admin-API-Key header")
        if not self.admin_key:
            raise unauthorized("Invalid admin API key (this server was started without one)")
        if not hmac.compare_digest(given.encode(), self.admin_key.encode()):
            raise unauthorized("Invalid admin API key")

    def _authorize(self, req: Request, route: str, auth: Auth) -> str | None:
        """The calling tenant (None for the admin key), or 401/403.

        As the reference servers do: on a dual-auth endpoint an admin key header means admin
        authentication (a wrong one is 401, never a fall-back to the tenant key). A tenant
        key on the runtime plane is checked for validity only: unknown, revoked or expired
        is 401 naming the reason. On the admin plane a refused key is 403 ``FORBIDDEN`` and a
        valid one lacking the endpoint's permission 403 ``INSUFFICIENT_PERMISSIONS``.
        """
        if auth is Auth.ADMIN or (
            auth is Auth.EITHER and (req.headers.get("x-admin-api-key") or "").strip()
        ):
            self._admin(req)
            return None
        key = (req.headers.get("x-cycles-api-key") or "").strip()
        if not key:
            raise unauthorized("Missing X-Cycles-API-Key header")
        found = self.ledger.check_key(key)
        required = REQUIRED.get((req.method, route))
        if required is None:  # runtime plane
            if not isinstance(found, Principal):
                raise unauthorized(found)
            return found.tenant
        if not isinstance(found, Principal):
            raise forbidden(f"Invalid API key: {found}")
        if not allows(found.permissions, required):
            raise LedgerError(
                403, "INSUFFICIENT_PERMISSIONS", f"API key lacks required permission: {required}"
            )
        return found.tenant

    @staticmethod
    def _tenant_key(tenant: str | None) -> str:
        assert tenant is not None, "Auth.TENANT routes always have a tenant"
        return tenant

    @staticmethod
    def _body(req: Request) -> tuple[Json, str]:
        """Parsed body and its idempotency hash; header/body key must agree."""
        body = parse_json(req.body)
        header_key = req.headers.get("x-idempotency-key")
        body_key = body.get("idempotency_key")
        if header_key is not None and body_key is not None and header_key != body_key:
            raise invalid("X-Idempotency-Key header does not match idempotency_key in body")
        return body, payload_hash(body)

    # ------------------------------------------------------------------ runtime protocol

    def health(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        return Response(200, {"status": "UP"})

    def reserve(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        request = validation.reservation(body)
        answer = self.ledger.reserve(self._tenant_key(tenant), request, digest)
        self._changed(tenant)  # a hold can exhaust a budget (the reference emits then too)
        return Response(200, answer)

    def decide(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        request = validation.decision(body)
        return Response(200, self.ledger.decide(self._tenant_key(tenant), request, digest))

    def commit(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        answer = self.ledger.commit(tenant, args[0], validation.commit(body), digest)
        self._changed(tenant)
        return Response(200, answer)

    def release(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        key, _reason = validation.release(body)
        return Response(200, self.ledger.release(tenant, args[0], key, digest))

    def extend(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        key, by = validation.extend(body)
        return Response(200, self.ledger.extend(self._tenant_key(tenant), args[0], key, by, digest))

    def event(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        body, digest = self._body(req)
        request = validation.event(body)
        answer = self.ledger.create_event(self._tenant_key(tenant), request, digest)
        self._changed(tenant)
        return Response(201, answer)

    def get_reservation(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        # The operator (admin key) also sees what the commit carried; runcycles' strict model
        # of the tenant view does not know those fields.
        detail = self.ledger.get_reservation(tenant, args[0], with_usage=tenant is None)
        return Response(200, detail)

    def list_reservations(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        wanted = req.query.get("tenant")
        if tenant is None:
            if not wanted:
                raise invalid(
                    "tenant query parameter is required when using admin key authentication"
                )
            tenant = wanted
        elif wanted and wanted != tenant:
            raise forbidden("tenant filter does not match the tenant of the API key")
        query = queries.reservations(req.query)
        page = self.ledger.list_reservations(
            tenant, query.where, query.order_by, query.descending, query.after, query.limit
        )
        out: Json = {"reservations": page["rows"], "has_more": page["has_more"]}
        if page["has_more"]:
            out["next_cursor"] = query.cursor(page["last"])
        return Response(200, out)

    def balances(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        own = self._tenant_key(tenant)
        filters = queries.subject_filters(req.query)
        if not filters:
            raise invalid(
                "at least one of tenant, workspace, app, workflow, agent, toolset is required"
            )
        if "tenant" in filters and filters["tenant"] != own:
            raise forbidden("tenant filter does not match the tenant of the API key")
        after = queries.balance_cursor(req.query.get("cursor"))
        rows, last = self.ledger.balance_page(own, filters, after, queries.limit(req.query))
        out: Json = {"balances": rows, "has_more": last is not None}
        if last is not None:
            out["next_cursor"] = queries.encode_cursor({"after": list(last)})
        return Response(200, out)

    # ------------------------------------------------------------------ admin provisioning

    def create_tenant(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        created_tenant, created = self.ledger.add_tenant(
            admin_requests.tenant(parse_json(req.body))
        )
        return Response(201 if created else 200, created_tenant)

    def list_tenants(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        return Response(200, {"tenants": self.ledger.list_tenants(), "has_more": False})

    def create_api_key(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        spec = admin_requests.api_key(parse_json(req.body), self.ledger.clock())
        return Response(201, self.ledger.issue_api_key(spec))

    def validate_key(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        secret = admin_requests.key_validation(parse_json(req.body))
        return Response(200, self.ledger.validate_key(secret))

    def create_budget(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        spec = admin_requests.budget_create(parse_json(req.body), tenant)
        return Response(201, self.ledger.create_budget(spec))

    def update_budget(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        change = admin_requests.budget_update(req.query, parse_json(req.body))
        return Response(200, self.ledger.update_budget(change))

    def list_budgets(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        if tenant is None:
            wanted = req.query.get("tenant_id")
            if not wanted:
                raise invalid(
                    "tenant_id query parameter is required when using admin key authentication"
                )
            tenant = admin_requests.tenant_id(wanted)
        unit = req.query.get("unit") or None
        rows = self.ledger.list_budgets(
            tenant, req.query.get("scope_prefix"), admin_requests.unit(unit) if unit else None
        )
        # Paged as the reference pages: cursor = the last ledger id of the page before.
        sort_by = req.query.get("sort_by") or "utilization"
        if sort_by not in BUDGET_SORT_FIELDS:
            raise invalid(
                f"Invalid sort_by '{sort_by}'; expected one of: {', '.join(BUDGET_SORT_FIELDS)}"
            )
        direction = (req.query.get("sort_dir") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise invalid(f"Invalid sort_dir '{direction}'; expected one of: asc, desc")
        page, has_more = budget_page(
            rows, sort_by, direction == "desc", req.query.get("cursor"), _budget_limit(req.query)
        )
        out: Json = {"ledgers": page, "has_more": has_more}
        if has_more:
            out["next_cursor"] = page[-1]["ledger_id"]
        return Response(200, out)

    def fund(self, req: Request, tenant: str | None, args: list[str]) -> Response:
        funding = admin_requests.funding(req.query, parse_json(req.body))
        if tenant is None and req.query.get("tenant_id"):
            admin_tenant = admin_requests.tenant_id(req.query["tenant_id"])
            if admin_tenant != funding.tenant_id:
                raise forbidden("Budget does not belong to that tenant")
        answer = self.ledger.apply_funding(funding, key_tenant=tenant)
        self._changed(funding.tenant_id)
        return Response(200, answer)

    def _changed(self, tenant: str | None) -> None:
        """Spend or funding changed ``tenant``'s budgets: threshold events (events/)."""
        if self.events is not None and tenant is not None:
            self.events.changed(tenant)


def _budget_limit(params: dict[str, str]) -> int:
    """GET /v1/admin/budgets' page size: 50 by default, brought into [1, 100] (the
    reference clamps rather than refuses); not an integer: 400."""
    raw = params.get("limit") or "50"
    if not re.fullmatch(r"-?[0-9]{1,9}", raw):
        raise invalid("limit must be an integer")
    return max(1, min(int(raw), 100))
