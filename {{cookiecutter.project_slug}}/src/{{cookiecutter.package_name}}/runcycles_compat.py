"""The one place this app reaches past runcycles' public API.

1. **Background settlement.**
The guard makes bare public client calls (create, commit, release, extend, events) so a
served request costs two round trips. A commit that does not settle at once (Cycles down,
a 5xx, a rate limit) must still land eventually, and runcycles already has the machinery
for that: a durable journal, backoff, and a fallback to ``POST /v1/events`` once the
reservation has expired. That machinery (``runcycles.retry.CommitRetryEngine``) is not
exported, so it is used here and nowhere else.

2. **A lean transport for plain-HTTP Cycles servers.** runcycles sends through httpx, which
costs about 0.4 ms of CPU per call; the standard library's http.client does the same for
about 0.1 ms, and a guarded request makes two calls. So for an ``http://`` base URL with no
proxy configured, the client's private ``_http`` (the httpx.Client its ``_post``/``_get``
use) is swapped for :class:`PlainHttp`, which answers with real httpx responses and raises
httpx's errors, so runcycles handles both as before. ``https://`` URLs (and anything behind a
proxy) keep runcycles' own httpx client untouched: TLS and proxies work exactly as runcycles
sets them up.

Tested with the runcycles versions in :data:`TESTED_RUNCYCLES_VERSIONS`; the project pins
runcycles to them, and ``tests/test_runcycles_compat.py`` fails loudly when the installed
runcycles no longer has what this module uses. When upgrading runcycles, run that test,
then add the new version here.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import runcycles
from runcycles import CyclesClient, CyclesConfig, CyclesResponse
from runcycles.retry import CommitRetryEngine

TESTED_RUNCYCLES_VERSIONS = ("0.5.3",)


class SettlementRetry:
    """Hands a commit or spend event that did not settle to runcycles' retry engine.

    The engine journals the body under the client's journal directory before its first
    retry, so a restart replays it, and it turns a commit whose reservation expired into
    a spend event. It also replays what an earlier run left in the journal.
    """

    def __init__(self, config: CyclesConfig, client: CyclesClient) -> None:
        self._client = _UntilClosed(client)
        self._engine = CommitRetryEngine(config)
        self._engine.set_client(self._client)

    def commit_later(
        self,
        reservation_id: str,
        commit_body: dict[str, Any],
        event_body: dict[str, Any],
        retry_after_ms: int | None = None,
    ) -> None:
        """Retry ``commit_body`` in the background; ``event_body`` if the hold expired."""
        self._engine.schedule(reservation_id, commit_body, event_body, retry_after_ms)

    def event_later(self, reference: str, event_body: dict[str, Any]) -> None:
        """Deliver a spend event in the background (``reference`` names it in the journal)."""
        self._engine.schedule_event(reference, event_body)

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for retries in flight (what is left stays journaled)."""
        self._engine.flush(timeout_s)

    def stop(self) -> None:
        """The app's client is about to close: retries still due fail softly from now on
        (as if Cycles were unreachable) and stay in the journal for the next start."""
        self._client.closed = True


class _UntilClosed:
    """The calls the retry engine makes, answered as a transport failure once closed."""

    def __init__(self, client: CyclesClient) -> None:
        self._client = client
        self.closed = False

    def commit_reservation(self, reservation_id: str, body: dict[str, Any]) -> CyclesResponse:
        if self.closed:
            return CyclesResponse.transport_error(ConnectionError("the app closed its client"))
        return self._client.commit_reservation(reservation_id, body)

    def create_event(self, body: dict[str, Any]) -> CyclesResponse:
        if self.closed:
            return CyclesResponse.transport_error(ConnectionError("the app closed its client"))
        return self._client.create_event(body)


def runcycles_version() -> str:
    return str(runcycles.__version__)


# Idle kept-alive connections kept per client (one per API key): beyond these, close.
MAX_IDLE_CONNECTIONS = 16

# Proxy settings httpx would honour for a plain-HTTP URL: with any of them set, keep httpx.
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def use_plain_http(client: CyclesClient, config: CyclesConfig) -> bool:
    """Give ``client`` the lean transport when its server is plain HTTP; True if it did."""
    url = urlsplit(config.base_url)
    if url.scheme != "http" or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return False
    old = client._http  # the httpx.Client runcycles made; its headers carry the API key
    client._http = PlainHttp(  # type: ignore[assignment]
        config.base_url,
        dict(old.headers),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
    )
    old.close()
    return True


class PlainHttp:
    """What runcycles' CyclesClient asks of its httpx.Client (``post``, ``get``, ``close``),
    over http.client, with a small pool of kept-alive connections shared by all threads
    (a connection goes back to the pool after each answer, so threads that come and go,
    as under ``flask run``, leave nothing open behind them)."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = MAX_IDLE_CONNECTIONS,
    ) -> None:
        url = urlsplit(base_url)
        self._base_url = base_url.rstrip("/")
        self._host = url.hostname or "localhost"
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        self._headers = {**headers, "Accept": "application/json"}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(max_idle)
        self._closed = False

    def post(
        self, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = _dumps(json)
        extra = {"Content-Type": "application/json", **(headers or {})}
        return self._send("POST", path, body, extra)

    def get(self, path: str, *, params: dict[str, str] | None = None) -> httpx.Response:
        return self._send("GET", path + ("?" + urlencode(params) if params else ""), None, {})

    def close(self) -> None:
        self._closed = True
        self._drain()

    def idle_connections(self) -> int:
        return self._idle.qsize()

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = httpx.Request(method, self._base_url + path)
        all_headers = {**self._headers, **headers}
        for attempt in (1, 2):
            connection, reused = self._checkout()
            try:
                connection.request(method, self._prefix + path, body, all_headers)
                answer = connection.getresponse()
                content = answer.read()
            except TimeoutError as exc:
                connection.close()
                raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                # Kept-alive connections the server has closed fail on first use: drop them
                # all and send once more on a new one. Every Cycles POST carries an
                # idempotency key, so sending it again is safe.
                if reused and attempt == 1:
                    self._drain()
                    continue
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            if answer.will_close:
                connection.close()
            else:
                self._checkin(connection)
            return httpx.Response(
                answer.status, headers=answer.getheaders(), content=content, request=request
            )
        raise AssertionError("unreachable")  # the loop returns or raises

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            return self._connect(), False

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        if self._closed:
            connection.close()
            return
        try:
            self._idle.put_nowait(connection)
        except queue.Full:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(
            self._host, self._port, timeout=self._connect_timeout
        )
        try:
            connection.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        assert connection.sock is not None
        connection.sock.settimeout(self._read_timeout)
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _drain(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _dumps(value: Any) -> bytes | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":")).encode()
