"""The answers gunicorn writes itself, as JSON: a worker's ``handle_error`` on a real socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.errors import (
    InvalidHeaderName,
    InvalidRequestLine,
    LimitRequestHeaders,
    LimitRequestLine,
)
from gunicorn.workers.base import Worker

from {{ cookiecutter.package_name }}.serving.json_errors import JsonErrors, error_code, json_error
from {{ cookiecutter.package_name }}.serving.read_deadlines import BodyTimeout, HeadTimeout


class JsonWorker(JsonErrors, Worker):  # type: ignore[misc]
    """The mixin over gunicorn's base worker: the class every worker class derives from."""


@pytest.fixture
def worker() -> Iterator[JsonWorker]:
    config = Config()
    made = JsonWorker(0, 0, [], None, 30, config, Logger(config))
    yield made
    made.tmp.close()


def answer_to(worker: JsonWorker, exc: BaseException) -> tuple[int, dict[str, str], dict[str, str]]:
    server_side, client_side = socket.socketpair()
    with client_side:
        client_side.shutdown(socket.SHUT_WR)  # the client has sent all it will
        worker.handle_error(None, server_side, ("127.0.0.1", 5000), exc)
        server_side.close()
        answer = b""
        while chunk := client_side.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["Content-Length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidRequestLine("GARBAGE"), 400, "bad_request"),
        (InvalidHeaderName("Bad Name"), 400, "bad_request"),
        (LimitRequestLine(9000, 4094), 414, "request_uri_too_long"),
        (
            LimitRequestHeaders("limit request headers fields"),
            431,
            "request_header_fields_too_large",
        ),
        (HeadTimeout("the request head took longer than 10 s"), 408, "request_timeout"),
        (BodyTimeout(), 408, "request_timeout"),
    ],
)
def test_gunicorns_answer_becomes_the_apps_json_error(
    worker: JsonWorker, exc: BaseException, status: int, code: str
) -> None:
    got, headers, body = answer_to(worker, exc)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert body["error"] == code
    assert set(body) == {"error", "message"} and body["message"]


def test_an_unexpected_error_is_a_500_that_says_nothing_of_it(worker: JsonWorker) -> None:
    status, _, body = answer_to(worker, RuntimeError("secret=hunter2"))
    assert status == 500
    assert body == {"error": "internal_error", "message": "Internal Server Error."}


def test_a_long_detail_is_cut_short(worker: JsonWorker) -> None:
    _, _, body = answer_to(worker, InvalidRequestLine("x" * 5000))
    assert len(body["message"]) < 300


def test_codes_are_named_as_the_app_names_http_errors() -> None:
    # errors.py: Werkzeug's name of the status, lower-case, words joined by "_".
    assert [error_code(s) for s in (400, 408, 414, 431, 501)] == [
        "bad_request",
        "request_timeout",
        "request_uri_too_long",
        "request_header_fields_too_large",
        "not_implemented",
    ]


def test_a_json_error_is_a_whole_http_answer() -> None:
    answer = json_error(400, "Bad Request: no.")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b'\r\n\r\n{"error": "bad_request", "message": "Bad Request: no."}')
