"""The one place this app reaches past runcycles' public API.

The guard makes bare public client calls (create, commit, release, extend, events) so a
served request costs two round trips. A commit that does not settle at once (Cycles down,
a 5xx, a rate limit) must still land eventually, and runcycles already has the machinery
for that: a durable journal, backoff, and a fallback to ``POST /v1/events`` once the
reservation has expired. That machinery (``runcycles.retry.CommitRetryEngine``) is not
exported, so it is used here and nowhere else.

Tested with the runcycles versions in :data:`TESTED_RUNCYCLES_VERSIONS`; the project pins
runcycles to them, and ``tests/test_runcycles_compat.py`` fails loudly when the installed
runcycles no longer has what this module uses. When upgrading runcycles, run that test,
then add the new version here.
"""

from __future__ import annotations

from typing import Any

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
