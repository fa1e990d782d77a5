"""A stand-in Cycles server: a tiny HTTP server that answers as a test's responder says.

It stands in for a Cycles server that misbehaves (rate limits, errors, silence), or, with
``forward_to``, records what the app sends on its way to the real one. The ``cycles_stub``
fixture in tests/conftest.py starts these and stops them after the test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


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


class StubServers:
    """Starts stand-in servers on 127.0.0.1 (``start``) and stops them all (``close``)."""

    def __init__(self) -> None:
        self._servers: list[ThreadingHTTPServer] = []

    def start(self, responder: Responder) -> CyclesStub:
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
        self._servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
        return CyclesStub(f"http://127.0.0.1:{server.server_address[1]}", seen)

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
