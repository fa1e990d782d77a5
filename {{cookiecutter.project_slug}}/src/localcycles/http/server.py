"""The local server: a listening socket, the selector front end and the protocol routes.

``front`` serves every connection from one thread (request deadline, idle timeout,
connection cap, group commit); ``codec`` parses and renders the HTTP/1.1 messages;
``routes`` turns a request into a protocol response. The thread count stays fixed however
many clients connect.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from ..events.delivery import Deliverer, RetryPolicy
from ..events.emitter import Emitter
from ..events.store import WebhookStore
from ..ledger.local_ledger import Clock, LocalLedger
from ..protocol.errors import LedgerError
from . import codec
from .front import FrontEnd, Job, Limits
from .routes import Api, Request, split_target
from .webhooks import WebhookRoutes

log = logging.getLogger(__name__.rsplit(".", 1)[0])

LISTEN_BACKLOG = 256


class LocalCyclesServer:
    """A Cycles-protocol server on a local SQLite ledger.

    ``start()`` serves from a daemon thread and returns ``self``; ``base_url`` is then set.
    ``port=0`` picks a free ephemeral port. ``admin_key`` enables the /v1/admin API.
    ``clock`` is the ledger's clock (epoch ms). ``limits`` bounds connections and how long a
    request may take to arrive; ``timer`` (monotonic seconds) measures those deadlines, so
    tests can move it instead of waiting.
    """

    def __init__(
        self,
        db_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_key: str | None = None,
        *,
        clock: Clock | None = None,
        limits: Limits | None = None,
        timer: Callable[[], float] = time.monotonic,
        webhook_retry: RetryPolicy | None = None,
    ) -> None:
        self.ledger = LocalLedger(db_path, clock=clock)
        # Webhook events (events/): subscriptions in the same file; delivery on its own thread.
        self.webhooks = WebhookStore(self.ledger.db)
        self.deliverer = Deliverer(webhook_retry)
        emitter = Emitter(self.webhooks, self.deliverer, self.ledger.clock)
        self.host = host
        self.port = port
        self.admin_key = admin_key
        self.limits = limits or Limits()
        self._timer = timer
        self._api = Api(
            self.ledger,
            admin_key,
            events=emitter,
            extra_routes=WebhookRoutes(self.webhooks, self.ledger.clock).routes(),
        )
        self._listener: socket.socket | None = None
        self._front: FrontEnd | None = None
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Event | None = None

    @property
    def base_url(self) -> str:
        if self._listener is None:
            raise RuntimeError("server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def front(self) -> FrontEnd:
        """The connection front end (its counters: open_connections, rejected, timed_out)."""
        if self._front is None:
            raise RuntimeError("server is not started")
        return self._front

    def bind(self) -> LocalCyclesServer:
        """Open the listening socket (resolves port 0) without serving yet."""
        if self._listener is None:
            listener = socket.create_server(
                (self.host, self.port), backlog=LISTEN_BACKLOG, reuse_port=False
            )
            self.port = int(listener.getsockname()[1])
            self._listener = listener
            self._front = FrontEnd(
                listener,
                self._respond,
                self.limits,
                timer=self._timer,
                group=self.ledger.db.group_commit,
            )
        return self

    def start(self) -> LocalCyclesServer:
        self.bind()
        assert self._front is not None
        if self._checkpointer is None:
            self._checkpointer = self.ledger.db.start_checkpointer()
        self._thread = threading.Thread(
            target=self._front.serve_forever, name=f"localcycles:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until ``stop()`` (from another thread or a signal)."""
        self.bind()
        assert self._front is not None
        self._front.serve_forever()

    def stop(self) -> None:
        listener, front = self._listener, self._front
        self._listener = self._front = None
        if listener is None or front is None:
            return
        front.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        listener.close()
        if self._checkpointer is not None:
            self.ledger.db.stop_checkpointer(self._checkpointer)
            self._checkpointer = None
        self.deliverer.stop()

    def _respond(self, job: Job) -> tuple[bytes, bool]:
        """Answer one request: the whole response and whether to keep the connection."""
        head = job.head
        started = time.perf_counter()
        keep_alive = head.keep_alive
        try:
            path, query = split_target(head.target)
            answer = self._api.dispatch(Request(head.method, path, query, head.headers, job.body))
            status = answer.status
            data = codec.response(
                status, answer.body, answer.headers, job.request_id, head.headers, keep_alive
            )
        except LedgerError as exc:
            status = exc.status
            data = codec.error_response(exc, job.request_id, head.headers, keep_alive)
        except Exception:
            log.exception("localcycles: unhandled error on %s %s", head.method, head.target)
            status = 500
            error = LedgerError(500, "INTERNAL_ERROR", "Internal error")
            data = codec.error_response(error, job.request_id, head.headers, keep_alive)
        if log.isEnabledFor(logging.DEBUG):
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.debug("%s %s -> %d in %.2f ms", head.method, head.target, status, elapsed_ms)
        return data, keep_alive

    def __enter__(self) -> LocalCyclesServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
