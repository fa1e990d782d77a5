"""Routing and request handling, independent of sockets: (method, path, headers, body) in,
(status, JSON, headers) out. Authentication, body parsing and validation live here."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from . import queries, validation
from .errors import CyclesError, forbidden, invalid
from .ledger import FUNDING_OPERATIONS, LocalLedger, payload_hash
from .validation import POLICIES, UNITS
from .wire import parse_iso_ms

Json = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    tenant: str | None = None  # effective tenant; None under admin auth


@dataclass
class Response:
    status: int
    body: Json
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, list[str]], Response]

_RESERVATION = re.compile(r"^/v1/reservations/([^/]+)(?:/(commit|release|extend))?$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Json:
    """The body as a JSON object, or 400 (never a 500) for anything else."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    return value


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

    def __init__(self, ledger: LocalLedger, admin_key: str | None) -> None:
        self.ledger = ledger
        self.admin_key = admin_key
        self._static: dict[str, dict[str, Handler]] = {
            "/v1/reservations": {"POST": self.reserve, "GET": self.list_reservations},
            "/v1/decide": {"POST": self.decide},
            "/v1/balances": {"GET": self.balances},
            "/v1/events": {"POST": self.event},
            "/healthz": {"GET": self.health},
            "/v1/admin/tenants": {"POST": self.create_tenant, "GET": self.list_tenants},
            "/v1/admin/api-keys": {"POST": self.create_api_key},
            "/v1/admin/budgets": {
                "POST": self.create_budget,
                "GET": self.list_budgets,
                "PATCH": self.update_budget,
            },
            "/v1/admin/budgets/fund": {"POST": self.fund},
        }

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, req: Request) -> Response:
        routes = self._static.get(req.path)
        args: list[str] = []
        if routes is None:
            match = _RESERVATION.match(req.path)
            if match is None:
                raise CyclesError(404, "NOT_FOUND", f"No such endpoint: {req.path}")
            reservation_id, action = unquote(match.group(1)), match.group(2)
            if len(reservation_id) > 128:
                raise invalid("reservation_id must be at most 128 characters")
            args = [reservation_id]
            routes = (
                {
                    "POST": {"commit": self.commit, "release": self.release, "extend": self.extend}[
                        action
                    ]
                }
                if action
                else {"GET": self.get_reservation}
            )
        handler = routes.get(req.method)
        if handler is None:
            allow = ", ".join(sorted(routes))
            raise CyclesError(
                405, "INVALID_REQUEST", f"Method {req.method} not allowed", headers={"Allow": allow}
            )
        return handler(req, args)

    # ------------------------------------------------------------------ auth

    def _is_admin(self, req: Request) -> bool:
        given = req.headers.get("x-admin-api-key")
        return bool(
            self.admin_key
            and given
            and hmac.compare_digest(given.encode(), self.admin_key.encode())
        )

    def _tenant(self, req: Request, *, admin_ok: bool = False) -> str | None:
        """Effective tenant from X-Cycles-API-Key (or None for an accepted admin key)."""
        key = req.headers.get("x-cycles-api-key")
        if key:
            tenant = self.ledger.authenticate(key)
            if tenant is not None:
                req.tenant = tenant
                return tenant
        elif admin_ok and self._is_admin(req):
            return None
        raise CyclesError(401, "UNAUTHORIZED", "Missing or invalid X-Cycles-API-Key")

    def _tenant_only(self, req: Request) -> str:
        tenant = self._tenant(req)
        assert tenant is not None
        return tenant

    def _admin(self, req: Request) -> None:
        if not self._is_admin(req):
            hint = "" if self.admin_key else " (this server was started without an admin key)"
            raise CyclesError(401, "UNAUTHORIZED", "Missing or invalid X-Admin-API-Key" + hint)

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

    def health(self, req: Request, args: list[str]) -> Response:
        return Response(200, {"status": "UP"})

    def reserve(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        body, digest = self._body(req)
        return Response(200, self.ledger.reserve(tenant, validation.reservation(body), digest))

    def decide(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        body, digest = self._body(req)
        return Response(200, self.ledger.decide(tenant, validation.decision(body), digest))

    def commit(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        body, digest = self._body(req)
        key, actual, _metrics, metadata = validation.commit(body)
        return Response(200, self.ledger.commit(tenant, args[0], key, actual, metadata, digest))

    def release(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant(req, admin_ok=True)
        body, digest = self._body(req)
        key, _reason = validation.release(body)
        return Response(200, self.ledger.release(tenant, args[0], key, digest))

    def extend(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        body, digest = self._body(req)
        key, by = validation.extend(body)
        return Response(200, self.ledger.extend(tenant, args[0], key, by, digest))

    def event(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        body, digest = self._body(req)
        return Response(201, self.ledger.create_event(tenant, validation.event(body), digest))

    def get_reservation(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant(req, admin_ok=True)
        return Response(200, self.ledger.get_reservation(tenant, args[0]))

    def list_reservations(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant(req, admin_ok=True)
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
            tenant, query.where, query.order_by, query.descending, query.offset, query.limit
        )
        out: Json = {"reservations": page["rows"], "has_more": page["has_more"]}
        if page["has_more"]:
            out["next_cursor"] = queries.encode_cursor(
                {"o": query.offset + query.limit, "f": query.fingerprint}
            )
        return Response(200, out)

    def balances(self, req: Request, args: list[str]) -> Response:
        tenant = self._tenant_only(req)
        filters = queries.subject_filters(req.query)
        if not filters:
            raise invalid(
                "at least one of tenant, workspace, app, workflow, agent, toolset is required"
            )
        if "tenant" in filters and filters["tenant"] != tenant:
            raise forbidden("tenant filter does not match the tenant of the API key")
        after = None
        cursor = req.query.get("cursor")
        if cursor:
            state = queries.decode_cursor(cursor)
            position = state.get("after")
            if not (
                isinstance(position, list)
                and len(position) == 2
                and all(isinstance(p, str) for p in position)
            ):
                raise invalid("cursor is not valid")
            after = (position[0], position[1])
        rows, last = self.ledger.balance_page(tenant, filters, after, queries.limit(req.query))
        out: Json = {"balances": rows, "has_more": last is not None}
        if last is not None:
            out["next_cursor"] = queries.encode_cursor({"after": list(last)})
        return Response(200, out)

    # ------------------------------------------------------------------ admin provisioning

    def create_tenant(self, req: Request, args: list[str]) -> Response:
        self._admin(req)
        body = parse_json(req.body)
        tenant_id = body.get("tenant_id")
        name = validation.string(body, "name", 256, where="tenant")
        if not isinstance(tenant_id, str):
            raise invalid("tenant_id is required")
        tenant, created = self.ledger.create_tenant(tenant_id, name)
        return Response(201 if created else 200, tenant)

    def list_tenants(self, req: Request, args: list[str]) -> Response:
        self._admin(req)
        return Response(200, {"tenants": self.ledger.list_tenants(), "has_more": False})

    def create_api_key(self, req: Request, args: list[str]) -> Response:
        self._admin(req)
        body = parse_json(req.body)
        tenant_id = validation.string(body, "tenant_id", 64, where="api_key", required=True)
        name = validation.string(body, "name", 256, where="api_key") or "default"
        permissions = body.get("permissions")
        if permissions is not None and not (
            isinstance(permissions, list) and all(isinstance(p, str) for p in permissions)
        ):
            raise invalid("permissions must be a list of strings")
        # Local extension: a caller-chosen secret, so dev keys can be fixed in .env files.
        secret = validation.string(body, "key_secret", 512, where="api_key")
        expires = body.get("expires_at")
        expires_ms = None
        if expires is not None:
            if not isinstance(expires, str):
                raise invalid("expires_at must be an ISO 8601 date-time")
            try:
                expires_ms = parse_iso_ms(expires)
            except ValueError:
                raise invalid("expires_at must be an ISO 8601 date-time") from None
        assert tenant_id is not None
        out = self.ledger.issue_api_key(
            tenant_id, secret, name=name, permissions=permissions, expires_at_ms=expires_ms
        )
        return Response(201, out)

    def _budget_owner(self, req: Request, body_tenant: object) -> str | None:
        """Admin key: tenant from the request; tenant API key: its own tenant only."""
        if self._is_admin(req):
            if body_tenant is not None and not isinstance(body_tenant, str):
                raise invalid("tenant_id must be a string")
            return body_tenant
        return self._tenant_only(req)

    def create_budget(self, req: Request, args: list[str]) -> Response:
        body = parse_json(req.body)
        tenant = self._budget_owner(req, body.get("tenant_id"))
        validation.check_keys(
            body,
            (
                "tenant_id",
                "scope",
                "unit",
                "allocated",
                "overdraft_limit",
                "commit_overage_policy",
                "rollover_policy",
                "period_start",
                "period_end",
                "metadata",
                "caps",
            ),
            ("scope", "unit", "allocated"),
            "budget",
        )
        unit = body.get("unit")
        allocated = validation.amount(body["allocated"], "allocated")
        overdraft = (
            validation.amount(body["overdraft_limit"], "overdraft_limit")
            if body.get("overdraft_limit") is not None
            else None
        )
        for value in (allocated, overdraft):
            if value is not None and value.unit != unit:
                raise invalid("amount units must match the budget unit")
        scope = validation.string(body, "scope", 1024, where="budget", required=True)
        assert scope is not None
        policy = (
            validation.choice(body, "commit_overage_policy", POLICIES, where="budget", default="")
            or None
        )
        out = self.ledger.create_budget(
            tenant,
            scope,
            str(unit),
            allocated.amount,
            overdraft.amount if overdraft else 0,
            validation.caps(body.get("caps")),
            policy,
        )
        return Response(201, out)

    def update_budget(self, req: Request, args: list[str]) -> Response:
        self._admin(req)
        scope, unit = req.query.get("scope"), req.query.get("unit")
        if not scope or unit not in UNITS:
            raise invalid("scope and unit query parameters are required")
        body = parse_json(req.body)
        validation.check_keys(
            body, ("overdraft_limit", "commit_overage_policy", "metadata", "caps"), (), "budget"
        )
        overdraft = (
            validation.amount(body["overdraft_limit"], "overdraft_limit")
            if body.get("overdraft_limit") is not None
            else None
        )
        if overdraft is not None and overdraft.unit != unit:
            raise invalid("overdraft_limit unit must match the budget unit")
        policy = (
            validation.choice(body, "commit_overage_policy", POLICIES, where="budget", default="")
            or None
        )
        caps = validation.caps(body.get("caps"))
        out = self.ledger.update_budget(
            scope,
            str(unit),
            overdraft_limit=overdraft.amount if overdraft else None,
            caps=caps,
            clear_caps="caps" in body and caps is None,
            commit_overage_policy=policy,
        )
        return Response(200, out)

    def list_budgets(self, req: Request, args: list[str]) -> Response:
        tenant = self._budget_owner(req, req.query.get("tenant_id"))
        if not tenant:
            raise invalid(
                "tenant_id query parameter is required when using admin key authentication"
            )
        rows = self.ledger.list_budgets(
            tenant, req.query.get("scope_prefix"), req.query.get("unit")
        )
        return Response(200, {"ledgers": rows, "has_more": False})

    def fund(self, req: Request, args: list[str]) -> Response:
        tenant = self._budget_owner(req, req.query.get("tenant_id"))
        scope, unit = req.query.get("scope"), req.query.get("unit")
        if not scope or unit not in UNITS:
            raise invalid("scope and unit query parameters are required")
        body = parse_json(req.body)
        validation.check_keys(
            body,
            ("operation", "amount", "spent", "reason", "idempotency_key", "metadata"),
            ("operation", "amount"),
            "funding",
        )
        operation = validation.choice(
            body, "operation", FUNDING_OPERATIONS, where="funding", default=""
        )
        amount = validation.amount(body["amount"], "amount")
        spent = validation.amount(body["spent"], "spent") if body.get("spent") is not None else None
        if amount.unit != unit or (spent is not None and spent.unit != unit):
            raise invalid("amount units must match the budget unit")
        key = validation.string(body, "idempotency_key", 256, where="funding")
        out = self.ledger.fund(
            scope,
            str(unit),
            operation,
            amount.amount,
            spent=spent.amount if spent else None,
            tenant_id=tenant,
            idempotency_key=key,
        )
        return Response(200, out)
