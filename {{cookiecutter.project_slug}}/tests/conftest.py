"""Shared fixtures: a real Cycles server over HTTP, the app under test, its callers.

The app talks to the embedded Cycles-protocol server through the real ``runcycles``
client, exactly as it talks to a Cycles deployment; nothing is mocked. ``cycles_stub``
stands in for a Cycles server that misbehaves (rate limits, errors, silence) or records
what the app sends on its way to the real one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from hypothesis import HealthCheck, settings
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }} import create_app
{%- if cookiecutter.tenant_auth == "api_key" %}
from {{ cookiecutter.package_name }}.config import hash_api_key
{%- endif %}
from {{ cookiecutter.package_name }}.cycles import clients as cycles_clients
from {{ cookiecutter.package_name }}.llm import Completion, FakeProvider, StreamProgress
from localcycles import LocalCyclesServer, LocalLedger
from openapi_contract import responses_match_the_document  # noqa: F401
from support.fault_proxy import FaultProxy

# The embedded server's own fixtures (lc_server, lc_http, ...), for tests/localcycles/.
pytest_plugins = ["support.localcycles_fixtures"]

TENANTS = ("acme", "globex")
UNIT = "USD_MICROCENTS"
# $100 per tenant unless a test sets less: no test runs out by accident.
DEFAULT_BUDGET = 100 * 100_000_000
CYCLES_OPERATOR = "operator"  # workspace isolation: the Cycles tenant that owns the app
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


def caller_key(tenant: str) -> str:
    """The API key a test caller presents for ``tenant`` (api_key auth)."""
    return f"caller-key-{tenant}"


def cycles_key(cycles_tenant: str) -> str:
    """The Cycles runtime API key of ``cycles_tenant`` on the test server."""
    return f"test-cycles-key-{cycles_tenant}"


def auth_headers(tenant: str) -> dict[str, str]:
    """How a caller proves it is ``tenant`` in this project."""
{%- if cookiecutter.tenant_auth == "api_key" %}
    return {"Authorization": f"Bearer {caller_key(tenant)}"}
{%- else %}
    return {"X-Tenant-ID": tenant}
{%- endif %}


def budget_scope(tenant: str) -> str:
    """The Cycles scope holding app tenant ``tenant``'s budget."""
{%- if cookiecutter.tenant_isolation == "workspace" %}
    return f"tenant:{CYCLES_OPERATOR}/workspace:{tenant}"
{%- else %}
    return f"tenant:{tenant}"
{%- endif %}


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
{%- if cookiecutter.tenant_auth == "api_key" %}
        "TENANT_API_KEYS": ",".join(f"{t}={hash_api_key(caller_key(t))}" for t in tenants),
{%- else %}
        "TENANTS": ",".join(tenants),
{%- endif %}
{%- if cookiecutter.tenant_isolation == "workspace" %}
        "CYCLES_TENANT": CYCLES_OPERATOR,
        "CYCLES_API_KEY": cycles_key(CYCLES_OPERATOR),
{%- else %}
        "CYCLES_TENANT_API_KEYS": ",".join(f"{t}={cycles_key(t)}" for t in tenants),
{%- endif %}
    }
    return env


def cycles_tenant_of(tenant: str) -> str:
    """The Cycles tenant that holds app tenant ``tenant``'s budget."""
{%- if cookiecutter.tenant_isolation == "workspace" %}
    return CYCLES_OPERATOR
{%- else %}
    return tenant
{%- endif %}


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
            cycles_tenant_of(tenant), [], "created_at_ms", False, 0, 1_000
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


def assert_error(response: TestResponse, status: int, error: str) -> dict[str, Any]:
    """The response is the app's JSON error shape with this status and stable code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["error"] == error
    assert set(body) <= {"error", "message", "retry_after_ms"}
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


# --- a stand-in Cycles server --------------------------------------------------------------


@dataclass
class StubRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


@dataclass
class StubReply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[StubRequest], StubReply]


@dataclass
class CyclesStub:
    base_url: str
    requests: list[StubRequest]

    def bodies(self, path_suffix: str) -> list[Any]:
        return [r.body for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]


def cycles_error(status: int, code: str, **headers: str) -> StubReply:
    """An error exactly as a Cycles server sends it (``headers`` such as Retry-After)."""
    body = {"error": code, "message": f"{code} (upstream detail)", "request_id": "req_1"}
    return StubReply(status, {**body, "trace_id": "0af7651916cd43dd8448eb211c80319c"}, headers)


def answering(forward: Responder, path_suffix: str, reply: StubReply) -> Responder:
    """Pass every request on to ``forward``, but answer those to ``path_suffix`` with ``reply``."""

    def respond(request: StubRequest) -> StubReply:
        return reply if request.path.endswith(path_suffix) else forward(request)

    return respond


def forward_to(base_url: str) -> Responder:
    """A responder that passes every request on to a real server (to record traffic)."""

    def forward(req: StubRequest) -> StubReply:
        wanted = {"x-cycles-api-key", "x-admin-api-key", "x-idempotency-key", "content-type"}
        headers = {k: v for k, v in req.headers.items() if k.lower() in wanted}
        content = json.dumps(req.body).encode() if req.body is not None else None
        upstream = httpx.request(
            req.method, base_url + req.path, content=content, headers=headers, timeout=10
        )
        keep = {"retry-after", "x-request-id"}
        return StubReply(
            upstream.status_code,
            upstream.json(),
            {k: v for k, v in upstream.headers.items() if k.lower() in keep},
        )

    return forward


@pytest.fixture
def cycles_stub() -> Iterator[Callable[[Responder], CyclesStub]]:
    """``cycles_stub(responder)``: a tiny HTTP server answering as ``responder`` says."""
    servers: list[ThreadingHTTPServer] = []

    def start(responder: Responder) -> CyclesStub:
        seen: list[StubRequest] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = StubRequest(
                    self.command, self.path, dict(self.headers), json.loads(raw) if raw else None
                )
                seen.append(request)
                reply = responder(request)
                data = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return CyclesStub(f"http://127.0.0.1:{server.server_address[1]}", seen)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- providers that tests can watch or hold back ------------------------------------------


class CountingProvider(FakeProvider):
    """The fake provider, counting its calls; ``gate`` (if set) holds each call until set.

    A held call lets a test act while a request is between its reservation and its commit.
    """

    def __init__(self, *, gate: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.started = threading.Semaphore(0)  # released once per call that began
        self.gate = gate
        self._lock = threading.Lock()

    def _begin(self) -> None:
        with self._lock:
            self.calls += 1
        self.started.release()
        if self.gate is not None:
            self.gate.wait()

    def complete(self, *, prompt: str, max_tokens: int, system: str | None = None) -> Completion:
        self._begin()
        return super().complete(prompt=prompt, max_tokens=max_tokens, system=system)

    def stream(
        self,
        *,
        prompt: str,
        max_tokens: int,
        progress: StreamProgress,
        system: str | None = None,
    ) -> Iterator[str]:
        self._begin()
        return super().stream(
            prompt=prompt, max_tokens=max_tokens, progress=progress, system=system
        )


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
