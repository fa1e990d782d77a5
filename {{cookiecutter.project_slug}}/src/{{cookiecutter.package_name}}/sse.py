"""Server-sent events: how a streamed answer is framed on the wire."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import Response

MIMETYPE = "text/event-stream"


def event(name: str, data: dict[str, Any]) -> bytes:
    """One event; the JSON data also names its type, for clients that read data only."""
    payload = json.dumps({"type": name, **data}, separators=(",", ":"))
    return f"event: {name}\ndata: {payload}\n\n".encode()


def response(events: Iterable[bytes]) -> Response:
    return Response(
        events,
        mimetype=MIMETYPE,
        headers={
            "Cache-Control": "no-cache",
            # Proxies such as nginx buffer responses unless told not to.
            "X-Accel-Buffering": "no",
        },
    )
