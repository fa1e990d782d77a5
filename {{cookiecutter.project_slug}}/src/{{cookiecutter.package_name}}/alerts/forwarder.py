"""Forwards queued alerts to tenants' URLs from a background thread: never on a request.

Each POST carries the alert JSON signed with the tenant's secret
(``X-Budget-Alert-Signature: sha256=<hex HMAC-SHA256 of the body>``, ``X-Budget-Alert-Id``,
``X-Budget-Alert-Type``). Any 2xx is delivered; otherwise it is retried after
``base_delay_s * 2 ** (attempt - 1)`` (capped at ``MAX_DELAY_S``), at most ``MAX_ATTEMPTS``
tries, then dropped with an error line. The outbox is in the store: forwards a stopped
process left are sent when the next app starts (``service.Alerts.resume``) or the next event
arrives. A tenant who removed the URL gets nothing more.

Before each POST the URL's host is resolved and checked again (``destinations.py``): an
internal address is refused like a failed attempt, and the POST connects to the address
that was checked. Redirects are never followed (a 3xx is a failed attempt).
"""

from __future__ import annotations

import logging
import threading

import httpx

from .destinations import Destinations, Target, UnsafeUrl
from .signatures import ALERT_ID_HEADER, ALERT_SIGNATURE_HEADER, ALERT_TYPE_HEADER, sign
from .store import AlertStore, Forward
from .tenant_secrets import TenantSecrets

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
MAX_DELAY_S = 300.0
TIMEOUT_S = 10.0
# A claimed forward is hidden this long from other workers while it is being posted.
LEASE_S = 60.0
IDLE_WAIT_S = 30.0


class Forwarder:
    def __init__(
        self,
        store: AlertStore,
        destinations: Destinations | None = None,
        base_delay_s: float = 1.0,
        secrets: TenantSecrets | None = None,
    ) -> None:
        self.store = store
        self.destinations = destinations or Destinations()
        self.secrets = secrets or TenantSecrets(None)
        self.base_delay_s = base_delay_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def delay(self, attempt: int) -> float:
        return float(min(self.base_delay_s * 2 ** (attempt - 1), MAX_DELAY_S))

    def kick(self) -> None:
        """Something was queued: start the thread (first time) and wake it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=TIMEOUT_S + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
                due = self.store.next_due()
            except Exception:
                log.exception("alert forwarding failed; retrying")
                due = self.store.clock() + IDLE_WAIT_S
            wait = IDLE_WAIT_S if due is None else max(0.0, due - self.store.clock())
            self._wake.wait(min(wait, IDLE_WAIT_S))

    def run_once(self) -> int:
        """Post every forward due now; how many were delivered."""
        delivered = 0
        for forward in self.store.claim_due(LEASE_S):
            delivered += self._send(forward)
        return delivered

    def _send(self, forward: Forward) -> bool:
        webhook = self.store.webhook(forward.tenant)
        if webhook is None:
            self.store.done(forward.id)
            return False
        secret = self.secrets.signing_secret(forward.tenant, webhook.secret)
        status = 0
        if secret is None:
            # Kept for its retries: restoring the key the secret came from delivers it.
            log.error(
                "alert %s for tenant %s not signed: its secret was derived from another "
                "BUDGET_ALERT_SIGNING_KEY (the tenant PUTs its URL again for a new one)",
                forward.alert_id, forward.tenant,
            )  # fmt: skip
        else:
            try:
                status = post(self.destinations.check(webhook.url), secret, forward)
            except UnsafeUrl as exc:
                log.error(
                    "alert %s for tenant %s refused: %s", forward.alert_id, forward.tenant, exc
                )
        if 200 <= status < 300:
            self.store.done(forward.id)
            log.info("alert %s forwarded to tenant %s", forward.alert_id, forward.tenant)
            return True
        attempts = forward.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            self.store.done(forward.id)
            log.error(
                "alert %s for tenant %s dropped after %d attempts (last: %s)",
                forward.alert_id, forward.tenant, attempts, status or "no answer",
            )  # fmt: skip
            return False
        self.store.retry(forward.id, attempts, self.delay(attempts))
        log.warning(
            "alert %s for tenant %s: attempt %d failed (%s)",
            forward.alert_id, forward.tenant, attempts, status or "no answer",
        )  # fmt: skip
        return False


def post(target: Target, secret: str, forward: Forward) -> int:
    """One signed POST to the checked address; its status, or 0 when nothing answered."""
    headers = {
        "Host": target.host,
        "Content-Type": "application/json",
        ALERT_SIGNATURE_HEADER: sign(secret, forward.body),
        ALERT_ID_HEADER: forward.alert_id,
        ALERT_TYPE_HEADER: forward.alert_type,
    }
    try:
        with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as http:
            answer = http.post(
                target.url,
                content=forward.body,
                headers=headers,
                extensions={"sni_hostname": target.server_name},
            )
            return answer.status_code
    except httpx.HTTPError:
        return 0
