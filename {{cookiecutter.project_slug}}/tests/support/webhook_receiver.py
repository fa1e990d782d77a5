"""A tiny HTTP server that records the webhooks posted to it (a subscriber or a tenant's URL).

``statuses`` answers the first requests with those codes (then 200), to exercise retries.
``wait_for(n)`` blocks until n requests arrived: tests wait on events, never on time (the
timeout only ends a test that would otherwise hang).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WAIT_LIMIT_S = 20.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


class WebhookReceiver:
    def __init__(self, statuses: Iterable[int] = ()) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self._statuses = list(statuses)
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._record(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"

    def _record(self, received: Received) -> int:
        with self._changed:
            status = self._statuses.pop(0) if self._statuses else 200
            self.answers.append(status)
            if 200 <= status < 300:
                self.received.append(received)
            self._changed.notify_all()
            return status

    def wait_for(self, count: int) -> list[Received]:
        """The first ``count`` accepted requests, once they arrived."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, WAIT_LIMIT_S)
            assert arrived, f"expected {count} webhooks, got {len(self.received)}"
            return list(self.received[:count])

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def webhook_receiver(statuses: Iterable[int] = ()) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses).start()
    try:
        yield receiver
    finally:
        receiver.stop()
