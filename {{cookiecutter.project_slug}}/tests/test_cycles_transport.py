"""The lean plain-HTTP transport (runcycles_compat.PlainHttp) and HTTPS left to runcycles."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from flask import Flask
from runcycles import CyclesClient, CyclesConfig

from conftest import Provisioner, auth_headers
from {{ cookiecutter.package_name }} import state
from {{ cookiecutter.package_name }}.runcycles_compat import PlainHttp, use_plain_http
from localcycles import LocalCyclesServer


def test_the_app_talks_to_a_plain_http_cycles_over_the_lean_transport(
    app: Flask, provisioner: Provisioner
) -> None:
    client = state.cycles(app).client_for("acme")
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
        assert use_plain_http(client, config) is False
        assert isinstance(client._http, httpx.Client)


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
    transport = PlainHttp(url, {"X-Cycles-API-Key": "k"}, connect_timeout=5, read_timeout=5)
    try:
        for _ in range(3):
            response = transport.get("/v1/balances", params={"tenant": "acme"})
            assert response.status_code == 200
            assert response.json() == {"balances": []}
    finally:
        transport.close()
    assert _Quiet.answers == ["/v1/balances?tenant=acme"] * 3


def test_nothing_listening_is_an_httpx_connect_error() -> None:
    transport = PlainHttp("http://127.0.0.1:9", {}, connect_timeout=5, read_timeout=5)
    with pytest.raises(httpx.ConnectError):
        transport.get("/v1/balances")


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
        assert use_plain_http(client, config) is False
        assert client.get_balances(tenant="acme").is_success


def test_threads_that_come_and_go_leave_no_connections_behind(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    # `flask run` serves each request on a new thread: each must hand its connection back.
    app = make_app(cycles_server.base_url)
    clients = state.cycles(app)
    for _ in range(40):
        thread = threading.Thread(target=clients.balances, args=("acme",))
        thread.start()
        thread.join()
    transport = clients.client_for("acme")._http
    assert isinstance(transport, PlainHttp)
    assert transport.idle_connections() == 1
    assert cycles_server.front.open_connections <= 2  # that one, and one closing at most
