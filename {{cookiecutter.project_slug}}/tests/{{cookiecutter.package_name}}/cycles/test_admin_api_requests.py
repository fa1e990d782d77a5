"""Every request `flask cycles` sends to the admin API, checked against the reference's rules.

The rules are the reference admin server's (runcycles/cycles-server-admin at the version
compose pins, 0.1.25.47): its request models (unknown fields refused, required fields, sizes,
patterns), its Permission, UnitEnum and FundingOperation enums, its ScopeValidator and the
controllers' cross-field checks. They are restated here as facts, so a request that drifts
from them fails this test even though the embedded server (which is more lenient) takes it.
The app's requests are recorded on their way to the embedded server over real HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from click.testing import Result
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from conftest import (
    ADMIN_KEY,
    TENANTS,
    CyclesStub,
    Provisioner,
    StubRequest,
    answering,
    budget_scope,
    cycles_error,
    cycles_key,
    cycles_tenant_of,
    forward_to,
)
from {{ cookiecutter.package_name }}.commands.keys_file import read_keys_file
from {{ cookiecutter.package_name }}.config import TENANT_ID_RE
from {{ cookiecutter.package_name }}.cycles.admin_api import RUNTIME_KEY_PERMISSIONS, key_works
from {{ cookiecutter.package_name }}.cycles.key_expiry import CLOCK
from localcycles import LocalCyclesServer

# --- the reference's rules (facts from cycles-server-admin 0.1.25.47) ----------------------

# Permission enum: every name the admin server accepts; any other is 400 INVALID_REQUEST.
PERMISSIONS = frozenset(
    [f"reservations:{a}" for a in ("create", "commit", "release", "extend", "list")]
    + ["balances:read", "events:read", "admin:read", "admin:write", "admin:audit:read"]
    + [f"{r}:{a}" for r in ("budgets", "policies", "webhooks") for a in ("read", "write")]
    + [
        f"admin:{r}:{a}"
        for r in ("tenants", "budgets", "policies", "apikeys", "webhooks")
        for a in ("read", "write")
    ]
    + ["admin:events:read"]
)
# ApiKeyRepository: what a key created without a list gets; the runtime plane needs no more.
DEFAULT_KEY_PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
)
UNITS = {"USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"}
FUNDING_OPERATIONS = {"CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT"}
TENANT_ID = re.compile(r"[a-z0-9-]{3,64}")  # TenantCreateRequest: @Pattern + @Size(3, 64)
SCOPE_KINDS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
SCOPE_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")  # ScopeValidator, <= 128
# An ISO 8601 instant as Jackson reads a java.time.Instant.
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")

FIELDS = {
    "tenant": {
        "tenant_id",
        "name",
        "parent_tenant_id",
        "metadata",
        "default_commit_overage_policy",
        "default_reservation_ttl_ms",
        "max_reservation_ttl_ms",
        "max_reservation_extensions",
        "reservation_expiry_policy",
    },
    "api_key": {
        "tenant_id",
        "name",
        "description",
        "permissions",
        "scope_filter",
        "expires_at",
        "metadata",
    },
    "budget": {
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
    },
    "fund": {"operation", "amount", "spent", "reason", "idempotency_key", "metadata"},
    "validate": {"key_secret"},
}


def non_blank(value: object, most: int = 10_000) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= most


def scope_problems(scope: object) -> list[str]:
    if not non_blank(scope):
        return ["scope must not be blank"]
    problems, last = [], -1
    for position, segment in enumerate(str(scope).split("/")):
        kind, _, ident = segment.partition(":")
        index = SCOPE_KINDS.index(kind) if kind in SCOPE_KINDS else -1
        if index < 0 or (position == 0 and index != 0) or index <= last:
            problems.append(f"scope segment {segment!r}: kind out of canonical order")
        if len(ident) > 128 or not SCOPE_ID.fullmatch(ident):
            problems.append(f"scope segment {segment!r}: bad id")
        last = index
    return problems


def amount_problems(amount: object, unit: object, what: str) -> list[str]:
    if not isinstance(amount, dict) or set(amount) != {"unit", "amount"}:
        return [f"{what} must have exactly the fields unit and amount"]
    value = amount["amount"]
    problems = []
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"{what}.amount must be a whole number >= 0")
    if amount["unit"] not in UNITS or amount["unit"] != unit:
        problems.append(f"{what}.unit must be the request's unit")
    return problems


def unknown_fields(body: dict[str, Any], model: str) -> list[str]:
    return [f"unknown field {name!r} ({model})" for name in set(body) - FIELDS[model]]


def tenant_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = unknown_fields(body, "tenant")
    if not non_blank(body.get("tenant_id")) or not TENANT_ID.fullmatch(body["tenant_id"]):
        problems.append("tenant_id must be 3-64 of [a-z0-9-]")
    if not non_blank(body.get("name"), 256):
        problems.append("name must be 1-256 characters, not blank")
    return problems


def api_key_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = unknown_fields(body, "api_key")
    if not non_blank(body.get("tenant_id")):
        problems.append("tenant_id is required")
    if not non_blank(body.get("name"), 256):
        problems.append("name must be 1-256 characters, not blank")
    permissions = body.get("permissions")
    if not isinstance(permissions, list) or not permissions:
        problems.append("permissions must be given (the server's default is not ours to rely on)")
    else:
        problems += [f"Unrecognized permission: {p}" for p in permissions if p not in PERMISSIONS]
    if not isinstance(body.get("expires_at"), str) or not INSTANT.fullmatch(body["expires_at"]):
        problems.append("expires_at must be set, as an ISO 8601 instant (else 90 days)")
    return problems


def budget_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = unknown_fields(body, "budget") + scope_problems(body.get("scope"))
    # Admin-key calls name the tenant, and the scope must be that tenant's.
    tenant = body.get("tenant_id")
    if not non_blank(tenant):
        problems.append("tenant_id is required with the admin key")
    elif not str(body.get("scope", "")).startswith(f"tenant:{tenant}"):
        problems.append("the scope's tenant must be tenant_id")
    if body.get("unit") not in UNITS:
        problems.append("unit must be one of the UnitEnum")
    return problems + amount_problems(body.get("allocated"), body.get("unit"), "allocated")


def fund_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = unknown_fields(body, "fund") + scope_problems(query.get("scope"))
    if not non_blank(query.get("tenant_id")):
        problems.append("tenant_id query parameter is required with the admin key")
    if query.get("unit") not in UNITS:
        problems.append("unit query parameter must be one of the UnitEnum")
    if body.get("operation") not in FUNDING_OPERATIONS:
        problems.append("operation must be one of the FundingOperation enum")
    if "reason" in body and not (isinstance(body["reason"], str) and len(body["reason"]) <= 512):
        problems.append("reason must be at most 512 characters")
    return problems + amount_problems(body.get("amount"), query.get("unit"), "amount")


def fund_key_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    """BudgetFundingRequest's idempotency_key: @Size(min = 1, max = 256) when present."""
    key = body.get("idempotency_key")
    if key is not None and not (isinstance(key, str) and 1 <= len(key) <= 256):
        return ["idempotency_key must be 1-256 characters"]
    return []


# BudgetController.list's query parameters.
LIST_PARAMETERS = {
    "tenant_id", "scope_prefix", "unit", "status", "over_limit", "has_debt", "utilization_min",
    "utilization_max", "search", "cursor", "limit", "sort_by", "sort_dir",
}  # fmt: skip
# BudgetController's ALLOWED_SORT_FIELDS (anything else is 400); it clamps limit to [1, 100].
LIST_SORT_FIELDS = {
    "tenant_id", "scope", "unit", "status", "commit_overage_policy", "utilization", "debt"
}  # fmt: skip


def list_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = [f"unknown query parameter {name!r}" for name in set(query) - LIST_PARAMETERS]
    if not non_blank(query.get("tenant_id")):
        problems.append("tenant_id: without it the admin key lists every tenant's budgets")
    if "unit" in query and query["unit"] not in UNITS:
        problems.append("unit query parameter must be one of the UnitEnum")
    if "sort_by" in query and query["sort_by"] not in LIST_SORT_FIELDS:
        problems.append(f"Invalid sort_by '{query['sort_by']}'")
    if "sort_dir" in query and query["sort_dir"].lower() not in ("asc", "desc"):
        problems.append(f"Invalid sort_dir '{query['sort_dir']}'")
    if "limit" in query and not re.fullmatch(r"-?[0-9]{1,9}", query["limit"]):
        problems.append("limit must be an int")  # Spring's binding of @RequestParam int
    return problems


def validate_problems(body: dict[str, Any], query: dict[str, str]) -> list[str]:
    problems = unknown_fields(body, "validate")
    return problems + ([] if non_blank(body.get("key_secret")) else ["key_secret is required"])


RULES: dict[tuple[str, str], Callable[[dict[str, Any], dict[str, str]], list[str]]] = {
    ("POST", "/v1/admin/tenants"): tenant_problems,
    ("POST", "/v1/admin/api-keys"): api_key_problems,
    ("POST", "/v1/admin/budgets"): budget_problems,
    ("POST", "/v1/admin/budgets/fund"): lambda b, q: fund_problems(b, q) + fund_key_problems(b, q),
    ("GET", "/v1/admin/budgets"): list_problems,
    ("POST", "/v1/auth/validate"): validate_problems,
}


def problems_of(request: StubRequest) -> list[str]:
    parts = urlsplit(request.path)
    rule = RULES.get((request.method, parts.path))
    assert rule is not None, f"a request this test has no rules for: {request.method} {parts.path}"
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers.get("x-admin-api-key") == ADMIN_KEY, "admin calls use the admin key"
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    body = request.body if isinstance(request.body, dict) else {}
    return rule(body, query)


# --- the app's requests ------------------------------------------------------------------


def stack(make_app: Callable[..., Flask], server: LocalCyclesServer, admin_url: str) -> Flask:
    """An app pointed at ``server`` as at a real stack, whose admin calls go to ``admin_url``.
    Its runtime keys are not on the server yet: provisioning makes them."""
    return make_app(server.base_url, CYCLES_ADMIN_URL=admin_url, CYCLES_ADMIN_API_KEY=ADMIN_KEY)


def invoke(app: Flask, *args: str) -> Result:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def test_every_provisioning_request_meets_the_reference_rules(
    cycles_server: LocalCyclesServer,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    recorder = cycles_stub(forward_to(cycles_server.base_url))
    app = stack(make_app, cycles_server, recorder.base_url)
    keys_file = tmp_path / "cycles.env"
    invoke(app, "cycles", "provision", "--keys-file", str(keys_file))
    invoke(app, "cycles", "provision", "--keys-file", str(keys_file))  # reuses
    invoke(app, "cycles", "provision", "--keys-file", str(keys_file), "--rotate-keys")
    invoke(app, "cycles", "fund", "acme", "2.50", "--reason", "r" * 512)

    sent = {urlsplit(r.path).path for r in recorder.requests}
    assert {"/v1/admin/tenants", "/v1/admin/api-keys", "/v1/admin/budgets"} <= sent
    assert "/v1/admin/budgets/fund" in sent
    for request in recorder.requests:
        assert problems_of(request) == [], (request.method, request.path, request.body)
    for body in recorder.bodies("/v1/admin/api-keys"):
        assert tuple(body["permissions"]) == DEFAULT_KEY_PERMISSIONS
    budgets = recorder.bodies("/v1/admin/budgets")
    assert {body["scope"] for body in budgets} == {budget_scope(t) for t in TENANTS}
    # What the keys file records is what the last key requests asked for.
    recorded = read_keys_file(keys_file)["CYCLES_KEY_EXPIRES_AT"].split(",")
    last = recorder.bodies("/v1/admin/api-keys")[-1]
    assert f"{last['tenant_id']}={last['expires_at']}" in recorded


def test_every_request_of_plans_rollovers_and_budget_controls_meets_the_reference_rules(
    cycles_server: LocalCyclesServer,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    recorder = cycles_stub(forward_to(cycles_server.base_url))
    app = make_app(
        cycles_server.base_url,
        CYCLES_ADMIN_URL=recorder.base_url,
        CYCLES_ADMIN_API_KEY=ADMIN_KEY,
        BUDGET_PLANS="pro=5/day/user=1",
        DEFAULT_PLAN="pro",
        BUDGET_ROLLOVER_STATE=str(tmp_path / "rollover.json"),
    )
    moment = [datetime(2027, 3, 2, 10, tzinfo=UTC)]
    app.extensions[CLOCK] = lambda: moment[0]
    keys_file = str(tmp_path / "cycles.env")
    invoke(app, "cycles", "provision", "--keys-file", keys_file)  # creates at the plan's
    bob = f"{budget_scope('acme')}/agent:bob"  # an end user's budget: listed, rolled over
    cycles_server.ledger.set_budget(bob, "USD_MICROCENTS", allocated=100_000_000)
    invoke(app, "cycles", "set-budget", "acme", "1")
    invoke(app, "cycles", "provision", "--keys-file", keys_file)  # resizes back
    invoke(app, "cycles", "reset", "acme")
    invoke(app, "cycles", "rollover")
    moment[0] = datetime(2027, 3, 3, tzinfo=UTC)
    invoke(app, "cycles", "rollover")

    for request in recorder.requests:
        assert problems_of(request) == [], (request.method, request.path, request.body)
    funds = recorder.bodies("/v1/admin/budgets/fund")
    assert {body["operation"] for body in funds} == {"RESET", "RESET_SPENT"}
    rollovers = [body["idempotency_key"] for body in funds if "idempotency_key" in body]
    assert sorted(rollovers) == sorted(
        f"rollover:{scope}:2027-03-03T00:00:00Z"
        for scope in [bob, *(budget_scope(t) for t in TENANTS)]
    )
    assert "GET" in {request.method for request in recorder.requests}


def test_a_fund_reason_longer_than_the_admin_api_takes_is_a_usage_error(
    cycles_server: LocalCyclesServer,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
) -> None:
    recorder = cycles_stub(forward_to(cycles_server.base_url))
    app = stack(make_app, cycles_server, recorder.base_url)
    result = app.test_cli_runner().invoke(
        args=["cycles", "fund", "acme", "1", "--reason", "r" * 513]
    )
    assert result.exit_code == 2
    assert "--reason" in result.output and "at most 512 characters" in result.output
    assert recorder.requests == []


def test_a_tenant_made_elsewhere_under_another_name_is_still_provisioned(
    cycles_server: LocalCyclesServer,
    cycles_stub: Callable[..., CyclesStub],
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    """The reference answers 409 DUPLICATE_RESOURCE for an existing tenant whose name is not
    the one sent (200 only for the same name): it exists, and provisioning goes on."""
    for tenant in dict.fromkeys(cycles_tenant_of(t) for t in TENANTS):
        cycles_server.ledger.create_tenant(tenant)
    duplicate = cycles_error(409, "DUPLICATE_RESOURCE")
    admin = cycles_stub(answering(forward_to(cycles_server.base_url), "/tenants", duplicate))
    app = stack(make_app, cycles_server, admin.base_url)
    output = invoke(app, "cycles", "provision", "--keys-file", str(tmp_path / "k.env")).output
    assert f"tenant {cycles_tenant_of('acme')}: exists" in output
    assert f"budget {budget_scope('acme')}: created" in output


def test_a_key_cycles_refuses_with_401_or_403_is_a_key_that_does_not_work(
    cycles_server: LocalCyclesServer, provisioner: Provisioner
) -> None:
    """The reference runtime server answers 401 for a key it does not know and 403
    FORBIDDEN for another tenant's valid key (its tenant check of every request): either way
    provisioning must make a new key, not stop on an error."""
    owner = cycles_tenant_of("acme")
    cycles_server.ledger.create_tenant("elsewhere")
    elsewhere_key = cycles_server.ledger.create_api_key("elsewhere", "test-cycles-key-elsewhere")
    url = cycles_server.base_url
    assert key_works(url, cycles_key(owner), owner)
    assert not key_works(url, elsewhere_key, owner)  # 403
    assert not key_works(url, "test-cycles-key-nobody", owner)  # 401


def test_the_runtime_key_asks_only_for_permissions_the_reference_knows() -> None:
    assert set(RUNTIME_KEY_PERMISSIONS) <= PERMISSIONS
    assert RUNTIME_KEY_PERMISSIONS == DEFAULT_KEY_PERMISSIONS


def test_the_rules_here_catch_what_the_reference_refuses() -> None:
    """The checker is not a rubber stamp: each rule refuses what the reference refuses."""
    key = {"tenant_id": "acme", "name": "app", "expires_at": "2027-03-02T10:00:00Z"}
    assert api_key_problems({**key, "permissions": ["decide"]}, {}) == [
        "Unrecognized permission: decide"
    ]
    assert api_key_problems({**key, "permissions": ["events:create"]}, {})
    assert api_key_problems({**key, "permissions": list(DEFAULT_KEY_PERMISSIONS)}, {}) == []
    assert api_key_problems({**key, "permissions": ["balances:read"], "expires_at": None}, {})
    assert tenant_problems({"tenant_id": "ab", "name": "ab"}, {})
    budget = {"tenant_id": "acme", "scope": "tenant:acme", "unit": "USD_MICROCENTS"}
    allocated = {"amount": 5, "unit": "USD_MICROCENTS"}
    assert budget_problems({**budget, "allocated": allocated}, {}) == []
    assert budget_problems({**budget, "allocated": {**allocated, "unit": "TOKENS"}}, {})
    assert budget_problems({**budget, "allocated": allocated, "scope": "workspace:x"}, {})
    assert budget_problems({**budget, "allocated": allocated, "scope": "tenant:acme-"}, {})
    assert budget_problems({**budget, "allocated": allocated, "extra": 1}, {})
    query = {"tenant_id": "acme", "scope": "tenant:acme", "unit": "USD_MICROCENTS"}
    fund = {"operation": "CREDIT", "amount": allocated}
    assert fund_problems(fund, query) == []
    assert fund_problems({**fund, "operation": "TOP_UP"}, query)
    assert fund_problems(fund, {**query, "tenant_id": ""})
    listing = {"tenant_id": "acme", "scope_prefix": "tenant:acme", "sort_by": "scope"}
    assert list_problems({}, {**listing, "sort_dir": "asc", "limit": "100"}) == []
    assert list_problems({}, {**listing, "sort_by": "spent"})
    assert list_problems({}, {**listing, "sort_dir": "up"})
    assert list_problems({}, {**listing, "limit": "all"})


@given(st.from_regex(TENANT_ID_RE, fullmatch=True))
def test_every_tenant_id_the_app_takes_is_one_the_reference_takes(tenant: str) -> None:
    """One rule for app tenants: a Cycles tenant id, and an id in a workspace scope."""
    assert TENANT_ID.fullmatch(tenant)
    assert scope_problems(f"tenant:{tenant}/workspace:{tenant}") == []
