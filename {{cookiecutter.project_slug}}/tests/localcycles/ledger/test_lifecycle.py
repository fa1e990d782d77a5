"""The runcycles client against the local server: every 2xx body fits runcycles' models."""

from __future__ import annotations

import uuid

import httpx
import pytest
from runcycles import (
    Action,
    Amount,
    BudgetExceededError,
    CyclesClient,
    CyclesMetrics,
    Subject,
    cycles,
    get_cycles_context,
)
from runcycles.models import (
    BalanceResponse,
    CommitResponse,
    DecisionResponse,
    EventCreateResponse,
    ReleaseResponse,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendResponse,
    ReservationListResponse,
)

from localcycles import LocalLedger
from support.localcycles_kit import LC_ADMIN_KEY, LC_TENANT, LC_UNIT, reservation_body


def figures(ledger: LocalLedger, scope: str) -> tuple[int, int, int, int]:
    """(allocated, spent, reserved, remaining) of one budget."""
    row = ledger.budget(scope, LC_UNIT)
    assert row is not None
    return row["allocated"], row["spent"], row["reserved"], row["remaining"]


def test_decorator_reserves_and_commits_actual_with_metrics(
    lc_ledger: LocalLedger, lc_client: CyclesClient, lc_http: httpx.Client
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    lc_ledger.set_budget("tenant:acme/workspace:prod", allocated=5_000)
    seen: dict[str, object] = {}

    @cycles(
        estimate=1_000,
        actual=lambda result: 600,
        tenant=LC_TENANT,
        workspace="prod",
        action_kind="llm.completion",
        action_name="gpt-test",
        client=lc_client,
    )
    def guarded(prompt: str) -> str:
        ctx = get_cycles_context()
        assert ctx is not None
        seen["reservation_id"] = ctx.reservation_id
        # Held on every derived scope while the guarded call runs.
        seen["during"] = figures(lc_ledger, "tenant:acme/workspace:prod")
        ctx.metrics = CyclesMetrics(tokens_input=12, tokens_output=34, model_version="m-1")
        return prompt.upper()

    assert guarded("hi") == "HI"
    assert seen["during"] == (5_000, 0, 1_000, 4_000)
    assert figures(lc_ledger, "tenant:acme") == (10_000, 600, 0, 9_400)
    assert figures(lc_ledger, "tenant:acme/workspace:prod") == (5_000, 600, 0, 4_400)
    detail = lc_client.get_reservation(str(seen["reservation_id"]))
    assert detail.status == 200
    parsed = ReservationDetail.model_validate(detail.body)
    assert parsed.status.value == "COMMITTED"
    assert parsed.committed is not None and parsed.committed.amount == 600
    assert parsed.affected_scopes == ["tenant:acme", "tenant:acme/workspace:prod"]
    # The ledger keeps what the call used; the operator sees it with the reservation.
    used = {"tokens_input": 12, "tokens_output": 34, "model_version": "m-1"}
    stored = lc_ledger.reservation_metrics(str(seen["reservation_id"])) or {}
    assert {name: stored.get(name) for name in used} == used  # runcycles adds latency_ms
    operator = lc_http.get(
        f"/v1/reservations/{seen['reservation_id']}", headers={"X-Admin-API-Key": LC_ADMIN_KEY}
    )
    assert operator.status_code == 200 and operator.json()["committed_metrics"] == stored


def test_decorator_releases_when_the_guarded_function_raises(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)

    @cycles(estimate=2_500, tenant=LC_TENANT, client=lc_client)
    def failing() -> None:
        assert figures(lc_ledger, "tenant:acme")[2] == 2_500
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError, match="provider down"):
        failing()
    assert figures(lc_ledger, "tenant:acme") == (10_000, 0, 0, 10_000)
    listed = lc_client.list_reservations(status="RELEASED")
    assert listed.status == 200
    assert len(ReservationListResponse.model_validate(listed.body).reservations) == 1


def test_decorator_denied_raises_budget_exceeded(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=100)

    @cycles(estimate=101, tenant=LC_TENANT, client=lc_client)
    def expensive() -> None:
        raise AssertionError("must not run")

    with pytest.raises(BudgetExceededError):
        expensive()
    assert figures(lc_ledger, "tenant:acme") == (100, 0, 0, 100)


def test_stream_reservation_commits_token_cost(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    with lc_client.stream_reservation(
        subject=Subject(tenant=LC_TENANT, app="chat"),
        action=Action(kind="llm.completion", name="stream-model"),
        estimate=Amount(unit=LC_UNIT, amount=3_000),
        ttl_ms=30_000,
        cost_fn=lambda usage: usage.tokens_input * 2 + usage.tokens_output * 5,
    ) as stream:
        assert figures(lc_ledger, "tenant:acme")[2] == 3_000
        stream.usage.add_input_tokens(100)
        stream.usage.add_output_tokens(200)
    assert stream.settlement_error is None
    assert figures(lc_ledger, "tenant:acme") == (10_000, 1_200, 0, 8_800)


def test_raw_protocol_calls_validate_against_client_models(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget("tenant:acme", allocated=10_000)
    lc_ledger.set_budget("tenant:acme/workspace:prod", allocated=8_000)
    subject = {"tenant": LC_TENANT, "workspace": "PROD", "agent": "bot"}

    created = lc_client.create_reservation(reservation_body(700, subject=subject, ttl_ms=5_000))
    assert created.status == 200
    res = ReservationCreateResponse.model_validate(created.body)
    assert res.decision.value == "ALLOW" and res.reservation_id
    # Lower-cased, present levels only, every prefix; unbudgeted agent scope is skipped.
    assert res.affected_scopes == [
        "tenant:acme",
        "tenant:acme/workspace:prod",
        "tenant:acme/workspace:prod/agent:bot",
    ]
    assert res.scope_path == "tenant:acme/workspace:prod/agent:bot"
    assert res.remaining_ttl_ms == 5_000 and res.caps is None
    assert [b.scope_path for b in res.balances or []] == [
        "tenant:acme",
        "tenant:acme/workspace:prod",
    ]

    extended = lc_client.extend_reservation(
        res.reservation_id, {"idempotency_key": uuid.uuid4().hex, "extend_by_ms": 1_000}
    )
    assert extended.status == 200
    ext = ReservationExtendResponse.model_validate(extended.body)
    assert ext.expires_at_ms == (res.expires_at_ms or 0) + 1_000

    committed = lc_client.commit_reservation(
        res.reservation_id,
        {
            "idempotency_key": uuid.uuid4().hex,
            "actual": {"unit": LC_UNIT, "amount": 500},
            "metrics": {"tokens_input": 1, "latency_ms": 3},
        },
    )
    assert committed.status == 200
    com = CommitResponse.model_validate(committed.body)
    assert com.charged.amount == 500 and com.released is not None and com.released.amount == 200

    second = lc_client.create_reservation(reservation_body(100))
    released = lc_client.release_reservation(
        second.body["reservation_id"], {"idempotency_key": uuid.uuid4().hex, "reason": "test"}
    )
    assert released.status == 200
    assert ReleaseResponse.model_validate(released.body).released.amount == 100

    decided = lc_client.decide(reservation_body(50_000))
    assert decided.status == 200
    decision = DecisionResponse.model_validate(decided.body)
    assert decision.decision.value == "DENY" and decision.reason_code == "BUDGET_EXCEEDED"

    event = lc_client.create_event(
        {
            "idempotency_key": uuid.uuid4().hex,
            "subject": {"tenant": LC_TENANT},
            "action": {"kind": "tool.search", "name": "web"},
            "actual": {"unit": LC_UNIT, "amount": 300},
        }
    )
    assert event.status == 201
    assert EventCreateResponse.model_validate(event.body).charged.amount == 300

    balances = lc_client.get_balances(tenant=LC_TENANT)
    assert balances.status == 200
    by_path = {b.scope_path: b for b in BalanceResponse.model_validate(balances.body).balances}
    root = by_path["tenant:acme"]
    assert (
        root.allocated.amount,
        root.spent.amount,
        root.reserved.amount,
        root.remaining.amount,
    ) == (10_000, 800, 0, 9_200)
    assert by_path["tenant:acme/workspace:prod"].scope == "workspace:prod"

    listed = lc_client.list_reservations()
    parsed = ReservationListResponse.model_validate(listed.body)
    assert {r.status.value for r in parsed.reservations} == {"COMMITTED", "RELEASED"}


def test_caps_make_allow_with_caps_and_dry_run_holds_nothing(
    lc_ledger: LocalLedger, lc_client: CyclesClient
) -> None:
    lc_ledger.set_budget(
        "tenant:acme", allocated=1_000, caps={"max_tokens": 256, "tool_denylist": ["shell"]}
    )
    dry = lc_client.create_reservation(reservation_body(400, dry_run=True))
    assert dry.status == 200
    parsed = ReservationCreateResponse.model_validate(dry.body)
    assert parsed.decision.value == "ALLOW_WITH_CAPS"
    assert parsed.caps is not None and parsed.caps.max_tokens == 256
    assert parsed.reservation_id is None and parsed.expires_at_ms is None
    assert figures(lc_ledger, "tenant:acme") == (1_000, 0, 0, 1_000)

    denied = lc_client.create_reservation(reservation_body(4_000, dry_run=True))
    assert denied.status == 200 and denied.body["decision"] == "DENY"
    assert denied.body["reason_code"] == "BUDGET_EXCEEDED"

    live = lc_client.create_reservation(reservation_body(400))
    assert live.body["decision"] == "ALLOW_WITH_CAPS"
    assert live.body["caps"] == {"max_tokens": 256, "tool_denylist": ["shell"]}
    decided = lc_client.decide(reservation_body(1))
    assert DecisionResponse.model_validate(decided.body).caps is not None
