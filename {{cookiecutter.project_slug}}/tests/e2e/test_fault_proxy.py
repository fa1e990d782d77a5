"""The fault-injecting proxy the fault tests rely on (tests/support/fault_proxy.py) does what
it says: a fault that silently passed everything through would make those tests vacuous."""

from __future__ import annotations

import httpx
import pytest

from localcycles import LocalCyclesServer
from support.fault_proxy import Cut, FaultProxy, Garble, Refuse, Stall

PATH = "/v1/balances"


def test_everything_passes_until_a_rule_matches_and_a_counted_rule_runs_out(
    fault_proxy: FaultProxy, cycles_server: LocalCyclesServer
) -> None:
    with httpx.Client(base_url=fault_proxy.base_url, timeout=5) as http:
        direct = httpx.get(cycles_server.base_url + PATH, timeout=5)
        passed = http.get(PATH)
        assert (passed.status_code, passed.json()["error"]) == (401, direct.json()["error"])
        fault_proxy.on(f"GET {PATH}", Garble(), times=1)
        garbled = http.get(PATH)
        assert garbled.status_code == 401
        with pytest.raises(ValueError):
            garbled.json()
        assert http.get(PATH).json()["error"] == direct.json()["error"]  # the rule ran out
    assert [e.fault for e in fault_proxy.of(f"GET {PATH}")] == ["pass", "Garble", "pass"]


def test_refuse_never_reaches_cycles_and_cut_sends_part_of_what_cycles_answered(
    fault_proxy: FaultProxy,
) -> None:
    fault_proxy.on("GET /v1/*", Refuse(), times=1)
    fault_proxy.on("POST /v1/reservations/{id}/commit", Cut(after_bytes=12))
    with httpx.Client(base_url=fault_proxy.base_url, timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            http.get(PATH)
        with pytest.raises(httpx.TransportError):
            http.post("/v1/reservations/rsv_1/commit", json={})
    refused, cut = fault_proxy.exchanges
    assert (refused.fault, refused.upstream_status, refused.sent) == ("Refuse", None, 0)
    assert cut.operation == "POST /v1/reservations/{id}/commit"
    assert (cut.upstream_status, cut.sent) == (401, 12)  # Cycles answered; 12 bytes got out


def test_a_stall_holds_the_answer_until_the_client_hangs_up(fault_proxy: FaultProxy) -> None:
    fault_proxy.on(f"GET {PATH}", Stall())
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(fault_proxy.base_url + PATH, timeout=0.2)
    [stalled] = fault_proxy.wait_done(f"GET {PATH}")
    assert stalled.app_hung_up and stalled.sent < stalled.answer_size
