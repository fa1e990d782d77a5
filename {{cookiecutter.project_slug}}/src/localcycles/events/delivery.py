"""Signed webhook delivery with retries, from one background thread.

As the reference events service (cycles-server-events) delivers: an HTTP POST of the event
JSON with ``X-Cycles-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the
subscription's signing secret>``, ``X-Cycles-Event-Id`` and ``X-Cycles-Event-Type``; any 2xx
is success; a failure is retried after ``initial_delay_s * multiplier ** (attempt - 1)``,
capped at ``max_delay_s``, at most ``max_retries`` times (the reference's defaults: 5 retries
from 1 s, doubling, capped at 60 s). Delivery is at least once: receivers drop duplicates
by event id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__.rsplit(".", 1)[0])

SIGNATURE_HEADER = "X-Cycles-Signature"
EVENT_ID_HEADER = "X-Cycles-Event-Id"
EVENT_TYPE_HEADER = "X-Cycles-Event-Type"
USER_AGENT = "localcycles-events"
TIMEOUT_S = 5.0


def sign(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    initial_delay_s: float = 1.0
    multiplier: float = 2.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1-based)."""
        return float(min(self.initial_delay_s * self.multiplier ** (attempt - 1), self.max_delay_s))


@dataclass(frozen=True)
class Delivery:
    url: str
    secret: str
    body: bytes
    event_id: str
    event_type: str


class Deliverer:
    """Posts queued deliveries from a daemon thread, started on the first one."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, delivery: Delivery) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="localcycles-events", daemon=True
                )
                self._thread.start()
        self._queue.put(delivery)

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            delivery = self._queue.get()
            if delivery is None:
                return
            self.deliver(delivery)

    def deliver(self, delivery: Delivery) -> bool:
        """Post until a 2xx, the retries run out or the deliverer stops."""
        for attempt in range(self.policy.max_retries + 1):
            if attempt and self._stop.wait(self.policy.delay(attempt)):
                return False
            status = post(delivery)
            if 200 <= status < 300:
                return True
            log.warning(
                "webhook %s to %s: attempt %d failed (%s)",
                delivery.event_id, delivery.url, attempt + 1, status or "no answer",
            )  # fmt: skip
        log.error("webhook %s to %s: gave up", delivery.event_id, delivery.url)
        return False


def post(delivery: Delivery) -> int:
    """One POST; the HTTP status, or 0 when nothing answered."""
    request = urllib.request.Request(
        delivery.url,
        data=delivery.body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(delivery.secret, delivery.body),
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.event_type,
            "User-Agent": USER_AGENT,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0
