"""The one place this app reaches past runcycles' public API.

**The transport.** runcycles sends through the httpx.Client it keeps as ``_http`` (its
``_post``/``_get`` call ``post``/``get`` on it). :func:`install_transport` replaces it:

* for an ``http://`` base URL with no proxy configured, with
  :class:`~.transport.PlainHttp` (http.client: about 0.1 ms of CPU per call where
  httpx costs about 0.4 ms, and a guarded request makes two calls), which answers with real
  httpx responses and raises httpx's errors, so runcycles handles both as before;
* otherwise (``https://``, a proxy) with runcycles' own httpx client, unchanged but for its
  network streams, so TLS and proxies work exactly as runcycles sets them up.

**runcycles' commit journal**, which earlier versions of this app settled through: what
it still holds is read once (:func:`journaled_settlements`) and moved to this app's own
store (unsettled.py), so an upgrade loses no spend.

Either way every call keeps to a total deadline and an answer size cap (see
transport.py): runcycles bounds only each socket operation.

Tested with the runcycles versions in :data:`TESTED_RUNCYCLES_VERSIONS`; the project pins
runcycles to them, and its test (``cycles/test_runcycles_compat.py`` under ``tests/``) fails
loudly when the installed runcycles no longer has what this module uses. When upgrading
runcycles, run that test, then add the new version here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import runcycles
from runcycles import CyclesClient, CyclesConfig

from ..config import cycles_call_budget_ms
from .transport import PlainHttp, bound_httpx

TESTED_RUNCYCLES_VERSIONS = ("0.5.3",)


def runcycles_version() -> str:
    return str(runcycles.__version__)


# Proxy settings httpx would honour for a plain-HTTP URL: with any of them set, keep httpx.
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def install_transport(client: CyclesClient, config: CyclesConfig) -> bool:
    """Make every call of ``client`` keep to the call deadline the TTL rule assumes and to
    the answer cap (transport.py); True when it got the lean plain-HTTP transport."""
    total_s = cycles_call_budget_ms(config.connect_timeout, config.read_timeout) / 1000
    old = client._http  # the httpx.Client runcycles made; its headers carry the API key
    url = urlsplit(config.base_url)
    if url.scheme != "http" or any(os.environ.get(name) for name in PROXY_VARIABLES):
        client._http = bound_httpx(old, total_s=total_s)  # type: ignore[assignment]
        return False
    client._http = PlainHttp(  # type: ignore[assignment]
        config.base_url,
        dict(old.headers),
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        total_s=total_s,
    )
    old.close()
    return True


@dataclass(frozen=True)
class JournaledSettlement:
    """A commit (or spend event) runcycles' journal kept, as its JSON file says."""

    path: Path
    reservation_id: str  # or the reference an event was journaled under
    commit_body: dict[str, Any] | None
    event_body: dict[str, Any] | None


def journaled_settlements(directory: Path) -> Iterator[JournaledSettlement]:
    """What runcycles 0.5's journal holds under ``directory`` (one folder per server and key,
    one JSON file per entry, format version 1); unreadable files are left where they are."""
    for path in sorted(directory.glob("*/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("version") != 1:
            continue
        reservation_id = data.get("reservation_id")
        commit = data.get("commit_body") if data.get("mode") == "commit" else None
        event = data.get("event_fallback_body")
        if not isinstance(reservation_id, str):
            continue
        yield JournaledSettlement(
            path,
            reservation_id,
            commit if isinstance(commit, dict) else None,
            event if isinstance(event, dict) else None,
        )
