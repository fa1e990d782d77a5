"""Which period each budget last rolled over to: a small JSON file the rollovers share.

Why a file of our own: the reference admin server keeps a funding's idempotency record for
24 hours only, so the idempotency key (``rollover:<scope>:<period start>``) stops a second
reset within a day, never within a week or a month. This record stops it for good: a budget
whose recorded period start is the current one (or later) is not reset again, and no call
is made. A tenant's end users have an entry each, and one more stands for all of them
(``<tenant scope>/agent:*``, see ``rollover.py``). It lives with the app's instance
(``BUDGET_ROLLOVER_STATE``; in compose on the rollover service's volume) and is keyed by the
server, so the embedded ledger and a real admin server never share an entry. Writes replace
the file atomically after re-reading it, so runs that overlap (the development timer and
``flask cycles rollover``) keep each other's entries; lost, it costs one thing: budgets are
tracked again from the current period (see ``rollover.py``), never reset twice.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from ..config import parse_instant

VERSION = 1


class RolloverState:
    """Period starts per (server, scope), read from and written to ``path``."""

    def __init__(self, path: Path, server: str) -> None:
        self.path = path
        self.server = server
        self._lock = threading.Lock()

    def rolled_to(self, scope: str) -> datetime | None:
        """The start of the period ``scope`` last rolled over to (None: never seen)."""
        return self.rolled_to_each([scope])[scope]

    def rolled_to_each(self, scopes: Iterable[str]) -> dict[str, datetime | None]:
        """:meth:`rolled_to` of each of ``scopes``, from one read (a tenant's end users are
        many: one read each would make a run's reading grow with their square)."""
        entries = self._read()
        return {scope: _instant(entries.get(self._key(scope))) for scope in scopes}

    def record(self, scope: str, start: datetime) -> None:
        self.record_each([scope], start)

    def record_each(self, scopes: Iterable[str], start: datetime) -> None:
        """Record that each of ``scopes`` rolled over to ``start``, in one write."""
        with self._lock:
            entries = self._read()
            entries.update((self._key(scope), start.isoformat()) for scope in scopes)
            self._write(entries)

    def _key(self, scope: str) -> str:
        return f"{self.server}|{scope}"

    def _read(self) -> dict[str, object]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RolloverStateError(
                f"{self.path}: cannot read the rollover record ({exc})"
            ) from None
        entries = document.get("rolled_to") if isinstance(document, dict) else None
        return dict(entries) if isinstance(entries, dict) else {}

    def _write(self, entries: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"version": VERSION, "rolled_to": dict(sorted(entries.items()))}
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".rollover-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=1)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _instant(text: object) -> datetime | None:
    try:
        return parse_instant(text) if isinstance(text, str) else None
    except ValueError:
        return None


class RolloverStateError(Exception):
    """The record exists but cannot be read: never guessed (a guess could reset twice)."""
