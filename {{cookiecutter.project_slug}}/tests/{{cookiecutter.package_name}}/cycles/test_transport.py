"""The lean plain-HTTP transport, HTTPS left to runcycles, and the bounds both keep to."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import click
import httpx
import pytest
from flask import Flask
from runcycles import CyclesClient, CyclesConfig

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from {{ cookiecutter.package_name }}.cycles.clients import cycles_clients
from {{ cookiecutter.package_name }}.cycles.runcycles_compat import install_transport
from {{ cookiecutter.package_name }}.cycles.transport import (
    MAX_ANSWER_BYTES,
    BoundedHttpx,
    PlainHttp,
    bound_httpx,
)
from localcycles import LocalCyclesServer
from localcycles.http.front import Limits
from support.fault_proxy import Drip, Drop, FaultProxy, Huge


def test_the_app_talks_to_a_plain_http_cycles_over_the_lean_transport(
    app: Flask, provisioner: Provisioner
) -> None:
    client = cycles_clients(app).client_for("acme")
    assert isinstance(client._http, PlainHttp)
    response = app.test_client().post(
        "/chat", json={"prompt": "hello", "max_tokens": 8}, headers=auth_headers("acme")
    )
    assert response.status_code == 200, response.get_json()
    assert provisioner.balance("acme")["spent"] == response.get_json()["cost_usd_microcents"]


def test_a_proxy_setting_keeps_runcycles_own_transport(
    cycles_server: LocalCyclesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    config = CyclesConfig(base_url=cycles_server.base_url, api_key="k")
    with CyclesClient(config) as client:
        assert install_transport(client, config) is False
        assert isinstance(client._http, BoundedHttpx)
        assert isinstance(client._http.http, httpx.Client)


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.answers.append(self.path)  # before answering: the client may be quicker
        body = json.dumps({"balances": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # Kept alive as far as the client knows, then dropped: what an idle timeout does.
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve_handler() -> Iterator[Callable[..., str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler], tls: Any = None) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://localhost:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_kept_alive_connection_the_server_dropped_is_reopened(
    serve_handler: Callable[..., str],
) -> None:
    _Quiet.answers = []
    url = serve_handler(_Quiet)
    transport = PlainHttp(
        url, {"X-Cycles-API-Key": "k"}, connect_timeout=5, read_timeout=5, total_s=15
    )
    try:
        for _ in range(3):
            response = transport.get("/v1/balances", params={"tenant": "acme"})
            assert response.status_code == 200
            assert response.json() == {"balances": []}
    finally:
        transport.close()
    assert _Quiet.answers == ["/v1/balances?tenant=acme"] * 3


class _Closing(http.server.BaseHTTPRequestHandler):
    """Answers a large body and says it closes the connection (as a server may, any time)."""

    protocol_version = "HTTP/1.1"
    body = json.dumps({"balances": [{"scope": "x" * 100}] * 1000}).encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_answer_on_a_connection_the_server_closes_is_read_whole(
    serve_handler: Callable[..., str],
) -> None:
    # http.client closes its side once the head says "close"; the body is read after that.
    url = serve_handler(_Closing)
    transport = PlainHttp(url, {}, connect_timeout=5, read_timeout=5, total_s=15)
    for _ in range(2):
        assert transport.get("/v1/balances").content == _Closing.body
    assert transport.idle_connections() == 0
    transport.close()


def test_nothing_listening_is_an_httpx_connect_error() -> None:
    # A ConnectError tells the guard the request never left (no lost hold to look for).
    transport = PlainHttp("http://127.0.0.1:9", {}, connect_timeout=5, read_timeout=5, total_s=15)
    with pytest.raises(httpx.ConnectError):
        transport.get("/v1/balances")


def test_a_request_that_may_have_reached_cycles_is_never_a_connect_error(
    fault_proxy: FaultProxy,
) -> None:
    transport = PlainHttp(fault_proxy.base_url, {}, connect_timeout=1, read_timeout=1, total_s=5)
    assert transport.get("/v1/balances").status_code == 401  # leaves a kept-alive connection
    fault_proxy.on("GET /v1/balances", Drop())  # Cycles acts on it; the answer is lost
    with pytest.raises(httpx.ReadError):
        transport.get("/v1/balances")  # sent on the kept-alive connection, then once more
    fault_proxy.clear()
    assert transport.get("/v1/balances").status_code == 401
    # The kept-alive connection dies and nothing listens any more: the first send may have
    # reached Cycles before it died, so even the resend's failure to connect is no
    # ConnectError.
    fault_proxy.stop()
    with pytest.raises(httpx.ReadError):
        transport.get("/v1/balances")
    transport.close()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_stays_with_runcycles_and_works(
    serve_handler: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    url = serve_handler(_Quiet, tls)
    # Trust exactly this certificate, as an operator would with SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    config = CyclesConfig(base_url=url, api_key="k", read_timeout=5)
    with CyclesClient(config) as client:
        assert install_transport(client, config) is False
        assert client.get_balances(tenant="acme").is_success


def test_threads_that_come_and_go_leave_no_connections_behind(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # `flask run` serves each request on a new thread: each must hand its connection back.
    app = make_app(cycles_server.base_url)
    clients = cycles_clients(app)
    for _ in range(40):
        thread = threading.Thread(target=clients.balances, args=("acme",))
        thread.start()
        thread.join()
    transport = clients.client_for("acme")._http
    assert isinstance(transport, PlainHttp)
    assert transport.idle_connections() == 1
    assert cycles_server.front.open_connections <= 2  # that one, and one closing at most


def test_calls_beyond_the_pool_wait_for_a_connection_instead_of_opening_more(
    tmp_path: Path,
) -> None:
    # A gevent worker makes hundreds of calls at once. A server that takes 4 connections
    # answers any more with 503: the pool of 4 must serve 64 simultaneous calls on its own.
    server = LocalCyclesServer(str(tmp_path / "c.sqlite3"), limits=Limits(max_connections=4))
    server.start()
    transport = PlainHttp(
        server.base_url,
        {"X-Cycles-API-Key": "unknown"},  # every answer is a 401: an answer all the same
        connect_timeout=5,
        read_timeout=5,
        total_s=30,
        max_connections=4,
    )
    start = threading.Barrier(64)
    statuses: list[int] = []

    def call() -> None:
        start.wait()
        statuses.append(transport.get("/v1/balances", params={"tenant": "acme"}).status_code)

    try:
        threads = [threading.Thread(target=call) for _ in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [401] * 64
        assert server.front.rejected == 0
        assert transport.idle_connections() <= 4
    finally:
        transport.close()
        server.stop()
        server.ledger.close()


# --- every call keeps to its deadline and the answer cap ---------------------------------
# A server that drips its answer (each byte well inside the read timeout), or sends more
# than any Cycles answer, is cut off: the proxy sees the transport hang up before the whole
# answer was out. Without the bounds each call below would read its answer to the end.


@pytest.fixture(params=["plain", "httpx"])
def bounded_transport(
    request: pytest.FixtureRequest, fault_proxy: FaultProxy
) -> Iterator[PlainHttp | BoundedHttpx]:
    """Each transport the app may use, to ``fault_proxy``, with a 1 s call deadline (long
    enough for the request to reach the proxy on a loaded machine: the tests need it there)."""
    headers = {"X-Cycles-API-Key": "k"}
    transport: PlainHttp | BoundedHttpx
    if request.param == "plain":
        transport = PlainHttp(
            fault_proxy.base_url, headers, connect_timeout=1, read_timeout=1, total_s=1.0
        )
    else:
        timeout = httpx.Timeout(connect=1, read=1, write=5, pool=5)
        http = httpx.Client(base_url=fault_proxy.base_url, headers=headers, timeout=timeout)
        transport = bound_httpx(http, total_s=1.0)
    yield transport
    transport.close()


@pytest.mark.parametrize("headers", [False, True], ids=["body", "head"])
def test_a_dripped_answer_is_cut_off_at_the_call_deadline(
    bounded_transport: PlainHttp | BoundedHttpx, fault_proxy: FaultProxy, headers: bool
) -> None:
    fault_proxy.on("GET /v1/balances", Drip(every_s=0.02, headers=headers))
    with pytest.raises(httpx.TimeoutException):
        bounded_transport.get("/v1/balances", params={"tenant": "acme"})
    [exchange] = fault_proxy.wait_done("GET /v1/balances")
    assert exchange.app_hung_up
    assert 0 < exchange.sent < exchange.answer_size


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_an_answer_past_the_size_cap_is_abandoned(
    bounded_transport: PlainHttp | BoundedHttpx, fault_proxy: FaultProxy, chunked: bool
) -> None:
    size = 64 * MAX_ANSWER_BYTES
    fault_proxy.on("GET /v1/balances", Huge(size, chunked=chunked))
    with pytest.raises(httpx.ReadError):
        bounded_transport.get("/v1/balances")
    [exchange] = fault_proxy.wait_done("GET /v1/balances")
    assert exchange.app_hung_up
    assert exchange.sent < size // 2  # what was read, plus what the socket buffers took


def test_an_answer_within_the_cap_and_the_deadline_is_read_whole(
    bounded_transport: PlainHttp | BoundedHttpx, fault_proxy: FaultProxy
) -> None:
    fault_proxy.on("GET /v1/balances", Huge(MAX_ANSWER_BYTES // 2))
    response = bounded_transport.get("/v1/balances")
    assert response.status_code == 200
    assert len(response.content) == MAX_ANSWER_BYTES // 2


def test_the_admin_api_client_abandons_an_answer_past_the_size_cap(
    fault_proxy: FaultProxy,
) -> None:
    fault_proxy.on("GET /v1/balances", Huge(64 * MAX_ANSWER_BYTES))
    with pytest.raises(click.ClickException, match="cannot reach the server"):
        Endpoint(fault_proxy.base_url, {}).call("GET", "/v1/balances")
    [exchange] = fault_proxy.wait_done("GET /v1/balances")
    assert exchange.app_hung_up
