"""Shared fixtures: a real Cycles server over HTTP, the app under test, its callers.

The app talks to the embedded Cycles-protocol server through the real ``runcycles``
client, exactly as it talks to a Cycles deployment; nothing is mocked. ``cycles_stub``
stands in for a Cycles server that misbehaves (rate limits, errors, silence) or records
what the app sends on its way to the real one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from hypothesis import HealthCheck, settings
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles import clients as cycles_clients
from localcycles import LocalCyclesServer, LocalLedger

# Helpers live in tests/support/; those imported ``as`` themselves are re-exported, for tests
# that import them from here (``from conftest import auth_headers``).
from support.callers_kit import auth_headers as auth_headers
from support.callers_kit import caller_settings
from support.cycles_stub import CyclesStub, Responder, StubServers
from support.cycles_stub import StubReply as StubReply
from support.cycles_stub import StubRequest as StubRequest
from support.cycles_stub import answering as answering
from support.cycles_stub import cycles_error as cycles_error
from support.cycles_stub import forward_to as forward_to
from support.fault_proxy import FaultProxy
from support.keys import caller_key as caller_key
from support.keys import cycles_key
from support.openapi_contract import responses_match_the_document  # noqa: F401
from support.providers import CountingProvider as CountingProvider
from support.tenancy_kit import budget_scope, cycles_settings, cycles_tenant_of

# The embedded server's own fixtures (lc_server, lc_http, ...), for tests/localcycles/, and
# a Cycles server on a clock the test moves (server_clock, clocked_server, clocked).
pytest_plugins = ["support.localcycles_fixtures", "support.clocked_fixtures"]

TENANTS = ("acme", "globex")
UNIT = "USD_MICROCENTS"
# $100 per tenant unless a test sets less: no test runs out by accident.
DEFAULT_BUDGET = 100 * 100_000_000
ADMIN_KEY = "test-admin-key"
# Settings the tests depend on, pinned so the developer's environment cannot leak in.
MAX_PROMPT_CHARS = 2_000
DEFAULT_MAX_TOKENS = 64
MAX_TOKENS_LIMIT = 256
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0


# Property tests: "thorough" by default; HYPOTHESIS_PROFILE=quick runs a fifth of the examples
# (for a fast inner loop, or a CI that runs this suite many times). No example database: a
# failure prints its example, and runs do not depend on what earlier runs found.
settings.register_profile(
    "thorough",
    max_examples=100,
    deadline=None,
    database=None,
    # Property tests reuse one app and ledger (function-scoped fixtures) for all examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("quick", settings.get_profile("thorough"), max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "thorough"))


@pytest.fixture(autouse=True, scope="session")
def offline_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point TLS certificate lookups at an empty CA directory for the whole run.

    Every httpx client (one per Cycles client and SDK client: ~200 per run) builds a TLS
    context up front, and with SSL_CERT_FILE or certifi that means parsing a CA bundle of
    a few hundred certificates, 30-50 ms each time. A CA directory is read lazily, only on a
    handshake, and an empty one also makes any accidental TLS connection to the internet
    fail: these tests talk to loopback HTTP and mocked transports only.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SSL_CERT_FILE", raising=False)
        patch.setenv("SSL_CERT_DIR", str(tmp_path_factory.mktemp("no-ca-certificates")))
        yield


@pytest.fixture(autouse=True, scope="session")
def no_dotenv() -> Iterator[None]:
    """A developer's ``.env`` in the project folder never reaches the tests.

    FLASK_SKIP_DOTENV=1 turns the ``.env`` files off for ``create_app``, Flask's CLI and
    gunicorn.conf.py alike (settings_source.py), and every process a test starts inherits it.
    The tests of ``.env`` loading unset it themselves.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLASK_SKIP_DOTENV", "1")
        yield


def app_env(base_url: str, tmp_path: Path, tenants: tuple[str, ...] = TENANTS) -> dict[str, str]:
    """Every setting an app under test needs to reach ``base_url`` as ``tenants``."""
    env = {
        "APP_ENV": "testing",
        "CYCLES_BASE_URL": base_url,
        "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
        "CYCLES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
        "CYCLES_READ_TIMEOUT": str(READ_TIMEOUT_S),
        "CYCLES_FAIL_OPEN": "false",
        "CYCLES_APP": "test-app",
        "LLM_PROVIDER": "fake",
        "MAX_PROMPT_CHARS": str(MAX_PROMPT_CHARS),
        "DEFAULT_MAX_TOKENS": str(DEFAULT_MAX_TOKENS),
        "MAX_TOKENS_LIMIT": str(MAX_TOKENS_LIMIT),
        "PROMETHEUS_MULTIPROC_DIR": "",  # one process: metrics in memory (see test_metrics)
        # Who the callers are and which Cycles credentials the app holds: bake-time answers,
        # each kept in a whole file (support/callers_kit.py, support/tenancy_kit.py).
        **caller_settings(tenants),
        **cycles_settings(tenants),
    }
    return env


class Provisioner:
    """Creates what an app tenant needs on the test ledger, as `flask cycles provision` does."""

    def __init__(self, ledger: LocalLedger) -> None:
        self.ledger = ledger

    def tenant(
        self, tenant: str, allocated: int = DEFAULT_BUDGET, caps: dict[str, Any] | None = None
    ) -> None:
        cycles_tenant = cycles_tenant_of(tenant)
        self.ledger.create_tenant(cycles_tenant)
        self.ledger.create_api_key(cycles_tenant, cycles_key(cycles_tenant))
        self.set_budget(tenant, allocated, caps)

    def set_budget(self, tenant: str, allocated: int, caps: dict[str, Any] | None = None) -> None:
        """Set the allocation (spend and holds are kept) and caps of ``tenant``'s budget."""
        self.ledger.set_budget(budget_scope(tenant), UNIT, allocated=allocated, caps=caps)

    def balance(self, tenant: str) -> dict[str, Any]:
        """``tenant``'s budget straight from the ledger (plain integers)."""
        found = self.ledger.budget(budget_scope(tenant), UNIT)
        assert found is not None, f"no budget for {tenant}"
        return found

    def reservation_statuses(self, tenant: str) -> list[str]:
        """The status of every reservation made for ``tenant``, oldest first."""
        page = self.ledger.list_reservations(
            cycles_tenant_of(tenant), [], "created_at_ms", False, None, 1_000
        )
        return [row["status"] for row in page["rows"]]


@pytest.fixture
def cycles_server(tmp_path: Path) -> Iterator[LocalCyclesServer]:
    """A real Cycles-protocol server on 127.0.0.1 over a fresh ledger file."""
    server = LocalCyclesServer(str(tmp_path / "cycles.sqlite3"), admin_key=ADMIN_KEY).start()
    yield server
    server.stop()
    server.ledger.close()


@pytest.fixture
def fault_proxy(cycles_server: LocalCyclesServer) -> Iterator[FaultProxy]:
    """A proxy in front of ``cycles_server`` that drops, garbles, drips or stalls chosen
    Cycles operations (see tests/support/fault_proxy.py); point the app at its base_url."""
    with FaultProxy(cycles_server.base_url) as proxy:
        yield proxy


@pytest.fixture
def ledger(cycles_server: LocalCyclesServer) -> LocalLedger:
    return cycles_server.ledger


@pytest.fixture
def provisioner(ledger: LocalLedger) -> Provisioner:
    """Provisioning on the test ledger; the default tenants already have $100 each."""
    provisioner = Provisioner(ledger)
    for tenant in TENANTS:
        provisioner.tenant(tenant)
    return provisioner


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``make_app(base_url, **overrides)``: an app pointed at ``base_url``, closed afterwards."""
    apps: list[Flask] = []

    def make(base_url: str, **overrides: str) -> Flask:
        app = create_app({**app_env(base_url, tmp_path), **overrides})
        apps.append(app)
        return app

    yield make
    for app in apps:
        cycles_clients.close(app)


@pytest.fixture
def app(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> Flask:
    """The app, talking to ``cycles_server`` as tenants ``acme`` and ``globex``."""
    return make_app(cycles_server.base_url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


BUDGET_DENIAL_FIELDS = {
    "estimate_microcents",
    "estimate_usd",
    "remaining_microcents",
    "remaining_usd",
    "limit_microcents",
    "limit_usd",
    "how_to_get_more",
}


def assert_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    """The response is the app's JSON error shape with this status and stable code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["error"] == error
    # A budget denial also names the estimate, what remains and how to get more.
    extra = BUDGET_DENIAL_FIELDS if status == 402 else set()
    assert set(body) <= {"error", "message", "retry_after_ms", *extra}
    assert isinstance(body["message"], str) and body["message"]
    text = response.get_data(as_text=True)
    for leak in ("None", "null", "<html", "Traceback"):
        assert leak not in text, f"{leak!r} in {text}"
    if "retry_after_ms" in body:
        seconds = int(response.headers["Retry-After"])
        assert seconds * 1000 >= body["retry_after_ms"]
    else:
        assert "Retry-After" not in response.headers
    return body


@pytest.fixture
def cycles_stub() -> Iterator[Callable[[Responder], CyclesStub]]:
    """``cycles_stub(responder)``: a stand-in Cycles server answering as ``responder`` says
    (tests/support/cycles_stub.py), stopped after the test."""
    servers = StubServers()
    yield servers.start
    servers.close()


@pytest.fixture
def recorder(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    cycles_stub: Callable[[Responder], CyclesStub],
) -> CyclesStub:
    """A stub in front of ``cycles_server`` (test tenants provisioned) that passes every
    request on and records it: point an app at its base_url to see what the app sent."""
    return cycles_stub(forward_to(cycles_server.base_url))


# --- the app behind a real socket --------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """``serve(app)``: run ``app`` in a threaded WSGI server on 127.0.0.1; its base URL."""
    servers = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
