"""Test-only helper for test_resilience.py: runs INSIDE a baked project's environment.

It is never imported by the template suite; test_resilience.py copies it next to a bake
and runs it with ``PYTHONPATH=<bake>/src`` (the baked package name is in
``$RESILIENCE_PACKAGE``). It offers:

- ``wsgi_app()``: the baked app with its LLM provider swapped for :class:`GatedProvider`,
  for gunicorn (``gunicorn 'resilience_driver:wsgi_app()'``);
- ``provision DB``: a tenant, a Cycles API key and a budget on a ledger file;
- ``ledger DB``: the budget and reservations on a ledger file, as JSON on stdout;
- ``chat URL JOURNAL_DIR RESULT_FILE``: one guarded ``POST /chat`` through an in-process
  app pointed at a Cycles server, then waits (bounded) until its unsettled charges (kept
  in JOURNAL_DIR) have landed.

:class:`GatedProvider` is the slow provider: the fake, except that each call first writes
``started-<pid>-<n>`` into ``$RESILIENCE_GATE`` and then blocks until a file named ``open``
appears there (at most ``GATE_TIMEOUT_S``). Tests thus act while a reservation is held
without guessing a sleep.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PACKAGE = os.environ.get("RESILIENCE_PACKAGE", "llm_service")
GATE_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 20.0
UNIT = "USD_MICROCENTS"
APP_TENANT = "acme"
OPERATOR = "operator"  # workspace isolation: the app's Cycles tenant
CALLER_KEY = "resilience-caller-key"
CYCLES_KEY = "resilience-cycles-key"
BUDGET = 100 * 100_000_000  # $100
PROMPT = "Summarize the resilience of a budget ledger in one line."

_pkg = importlib.import_module(PACKAGE)
_config = importlib.import_module(f"{PACKAGE}.config")
_llm = importlib.import_module(f"{PACKAGE}.llm")
_pricing = importlib.import_module(f"{PACKAGE}.budget.pricing")
_unsettled = importlib.import_module(f"{PACKAGE}.budget.unsettled")
_localcycles = importlib.import_module("localcycles")

_callers = importlib.import_module(f"{PACKAGE}.callers")
_cycles_tenancy = importlib.import_module(f"{PACKAGE}.cycles.tenancy")

WORKSPACE = _cycles_tenancy.ISOLATION == "workspace"
CYCLES_TENANT = OPERATOR if WORKSPACE else APP_TENANT
SCOPE = f"tenant:{OPERATOR}/workspace:{APP_TENANT}" if WORKSPACE else f"tenant:{APP_TENANT}"


class GatedProvider:
    """The fake provider, held at a gate (see the module docstring)."""

    name = "gated-fake"

    def __init__(self, gate: Path, model: str) -> None:
        self.gate = gate
        self.model = model
        self._fake = _llm.FakeProvider(model)
        self._calls = itertools.count()

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Any:
        marker = self.gate / f"started-{os.getpid()}-{next(self._calls)}"
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not (self.gate / "open").exists():
            if time.monotonic() > deadline:
                raise _llm.ProviderError("the test gate never opened")
            time.sleep(0.01)
        return self._fake.complete(prompt=prompt, max_tokens=max_tokens, system=system)


def _gated(app: Any) -> Any:
    settings = app.extensions["settings"]
    app.extensions["llm"] = GatedProvider(Path(os.environ["RESILIENCE_GATE"]), settings.llm_model)
    return app


def wsgi_app() -> Any:
    """The baked app (configured by the environment) with the gated provider.

    Its embedded ledger runs on a clock the test can move forward: the number of
    milliseconds in ``$RESILIENCE_GATE/clock_offset_ms`` (if present) is added to the wall
    clock, so "the hold has expired" needs no waiting for a real TTL.
    """
    app = _gated(_pkg.create_app())
    embedded = importlib.import_module(f"{PACKAGE}.cycles.clients").local_server(app)
    if embedded is not None:
        embedded.ledger.clock = _offset_clock(Path(os.environ["RESILIENCE_GATE"]))
    return app


def _offset_clock(gate: Path) -> Any:
    offset_file = gate / "clock_offset_ms"

    def now_ms() -> int:
        offset = int(offset_file.read_text()) if offset_file.exists() else 0
        return time.time_ns() // 1_000_000 + offset

    return now_ms


def auth_headers() -> dict[str, str]:
    if _callers.AUTH == "api_key":
        return {"Authorization": f"Bearer {CALLER_KEY}"}
    return {"X-Tenant-ID": APP_TENANT}


def app_overrides(base_url: str, journal: str) -> dict[str, str]:
    env = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": base_url,
        "CYCLES_JOURNAL_DIR": journal,
        "CYCLES_CONNECT_TIMEOUT": "1",
        "CYCLES_READ_TIMEOUT": "2",
        "LLM_PROVIDER": "fake",
    }
    if _callers.AUTH == "api_key":
        env["TENANT_API_KEYS"] = f"{APP_TENANT}={_config.hash_api_key(CALLER_KEY)}"
    else:
        env["TENANTS"] = APP_TENANT
    if WORKSPACE:
        env.update(CYCLES_TENANT=OPERATOR, CYCLES_API_KEY=CYCLES_KEY)
    else:
        env["CYCLES_TENANT_API_KEYS"] = f"{APP_TENANT}={CYCLES_KEY}"
    return env


def provision(db: str) -> None:
    ledger = _localcycles.LocalLedger(db)
    try:
        ledger.create_tenant(CYCLES_TENANT)
        ledger.create_api_key(CYCLES_TENANT, CYCLES_KEY)
        ledger.set_budget(SCOPE, UNIT, allocated=BUDGET)
    finally:
        ledger.close()


def show_ledger(db: str) -> None:
    """The app tenant's budget and every reservation of its Cycles tenant."""
    ledger = _localcycles.LocalLedger(db)
    try:
        page = ledger.list_reservations(CYCLES_TENANT, [], "created_at_ms", False, None, 1_000)
        out = {
            "budget": ledger.budget(SCOPE, UNIT),
            "reservations": [
                {"id": row["reservation_id"], "status": row["status"]} for row in page["rows"]
            ],
        }
    finally:
        ledger.close()
    print(json.dumps(out))


def chat(base_url: str, journal: str, result_file: str) -> int:
    """One guarded call; the result (with its exact cost) goes to ``result_file``."""
    app = _gated(_pkg.create_app(app_overrides(base_url, journal)))
    response = app.test_client().post("/chat", json={"prompt": PROMPT}, headers=auth_headers())
    body = response.get_json()
    usage = body.get("usage", {}) if isinstance(body, dict) else {}
    result: dict[str, Any] = {"status": response.status_code, "body": body}
    if usage:
        result["cost"] = _pricing.cost(usage["input_tokens"], usage["output_tokens"])
    Path(result_file + ".tmp").write_text(json.dumps(result))
    os.replace(result_file + ".tmp", result_file)
    # Stay alive while charges are unsettled, so the app's settler can land them.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while _unsettled.UnsettledStore(Path(journal)).charges():
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.05)
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "provision":
        provision(args[0])
        return 0
    if command == "ledger":
        show_ledger(args[0])
        return 0
    if command == "chat":
        return chat(*args)
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
