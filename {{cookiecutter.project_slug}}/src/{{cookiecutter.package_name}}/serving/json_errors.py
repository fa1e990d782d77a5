"""The answers gunicorn writes itself, before the app runs, as the app's JSON errors.

A request gunicorn cannot parse (a bad request line or header, a line or headers too large,
an unknown transfer coding ...) never reaches the app: gunicorn answers it with an HTML page
from ``Worker.handle_error``. That method is the one place it writes such answers, so the
worker classes override it: gunicorn still decides the status and logs the request, and the
bytes it would send are replaced by ``{"error": ..., "message": ...}`` (errors.py's shape)
with the same status and ``Connection: close``. This reaches past gunicorn's public API:
pyproject.toml pins gunicorn, and tests/<package>/serving/test_workers_compat.py fails when
the method changes.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from werkzeug.http import HTTP_STATUS_CODES

from .read_deadlines import BodyTimeout, HeadTimeout, ReadDeadlines

# errors.py's code for an error the server could not handle.
INTERNAL_ERROR = "internal_error"


def phrase(status: int) -> str:
    """The status's name as Werkzeug's errors, and so the app's (errors.py), name it."""
    return HTTP_STATUS_CODES.get(status, "Unknown Error")


def error_code(status: int) -> str:
    """The stable code of a status, as errors.py derives it: ``request_header_fields_too_large``."""
    if status == 500:
        return INTERNAL_ERROR
    return phrase(status).lower().replace(" ", "_").replace("'", "")


def json_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response, closing the connection."""
    body = json.dumps({"error": error_code(status), "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase(status)}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Captured:
    """Stands in for the client socket while gunicorn writes its HTML answer."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock: already non-blocking, write at once

    def sendall(self, data: bytes) -> None:
        self.data += data


def status_of(answer: bytes) -> int:
    """``HTTP/1.1 414 URI Too Long ...`` -> 414 (500 for anything unreadable)."""
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 500


def message_for(status: int, exc: BaseException) -> str:
    """What was wrong, in gunicorn's words, short and on one line."""
    detail = " ".join(str(exc).split())[:200]
    if status >= 500 or not detail:
        return f"{phrase(status)}."  # never an internal error's text: it may be anything
    return f"{phrase(status)}: {detail}"


class JsonErrors:
    """Mixed into a gunicorn worker class, before it: its own error answers are JSON."""

    log: Any  # the worker's: gunicorn's error log

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, (HeadTimeout, BodyTimeout)):
            peer = (addr or ("",))[0]
            self.log.warning("Request too slow from ip=%s: %s", peer, exc)
            status, message = 408, "The request was not received in time."
        else:
            captured = _Captured()
            super().handle_error(req, captured, addr, exc)  # type: ignore[misc]
            if not captured.data:
                return  # gunicorn had nothing to say
            status = status_of(captured.data)
            message = message_for(status, exc)
        try:
            util.write_nonblock(client, json_error(status, message))
        except Exception:
            self.log.debug("Failed to send error message.")
            return
        # Close now, reading what the client still sends (a line too long has more to
        # come): a socket closed with unread bytes resets the connection, and the client
        # may lose the answer. Whatever the close reads has no deadline.
        if isinstance(client, ReadDeadlines):
            client.no_deadline()
        util.close_graceful(client)
