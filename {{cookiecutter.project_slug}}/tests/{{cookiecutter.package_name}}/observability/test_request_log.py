"""Request ids on every response and in Cycles; one log line per request, streams included."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import (
    CyclesStub,
    Provisioner,
    auth_headers,
    caller_key,
)
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.observability.request_log import LOGGER_NAME
from localcycles import LocalCyclesServer

PROMPT = "A prompt that must never appear in a log line"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]


@pytest.fixture
def json_app(app: Flask, make_app: Callable[..., Flask], cycles_server: LocalCyclesServer) -> Flask:
    return make_app(cycles_server.base_url, LOG_FORMAT="json")


@pytest.mark.parametrize("request_id", ["abc-123", "trace.42:7_x", "A" * 64])
def test_a_safe_request_id_is_echoed(client: FlaskClient, request_id: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "unsafe", ["", "two words", "A" * 65, "<script>", "naïve", "-lead", "a\tb"]
)
def test_an_unsafe_request_id_is_replaced(client: FlaskClient, unsafe: str) -> None:
    first = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
    second = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
    assert first != unsafe and len(first) == 32 and first != second


def test_errors_carry_a_request_id_too(client: FlaskClient) -> None:
    assert client.get("/nope").headers["X-Request-ID"]
    assert client.post("/chat", json={"prompt": "hi"}).headers["X-Request-ID"]  # 401


def test_the_request_id_reaches_cycles_with_the_reservation_and_the_commit(
    recorder: CyclesStub, make_app: Callable[..., Flask]
) -> None:
    client = make_app(recorder.base_url).test_client()
    headers = {**auth_headers("acme"), "X-Request-ID": "order-7781"}
    response = client.post("/chat", json={"prompt": "hi"}, headers=headers)
    assert response.status_code == 200
    (reserve,) = recorder.bodies("/v1/reservations")
    (commit,) = recorder.bodies("/commit")
    assert reserve["metadata"]["request_id"] == "order-7781"
    assert commit["metadata"]["request_id"] == "order-7781"


def test_one_json_line_per_request_with_what_it_cost(
    json_app: Flask, provisioner: Provisioner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    client = json_app.test_client()
    response = client.post(
        "/chat", json={"prompt": PROMPT, "max_tokens": 20}, headers=auth_headers("acme")
    )
    assert response.status_code == 200
    (line,) = request_lines(caplog)
    charged = response.get_json()["cost_usd_microcents"]
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["route"], line["status"]) == ("POST", "/chat", 200)
    assert (line["tenant"], line["outcome"], line["charged"]) == ("acme", "committed", charged)
    assert line["estimate"] == pricing.estimate(PROMPT, max_tokens=20)
    assert str(line["reservation_id"]).startswith("rsv_")
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert provisioner.balance("acme")["spent"] == charged
    text = caplog.text
    assert PROMPT not in text and caller_key("acme") not in text


def test_a_denied_request_is_logged_with_its_reason(
    json_app: Flask, provisioner: Provisioner, caplog: pytest.LogCaptureFixture
) -> None:
    provisioner.set_budget("globex", 1)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    response = json_app.test_client().post(
        "/chat", json={"prompt": "hi"}, headers=auth_headers("globex")
    )
    assert response.status_code == 402
    (line,) = request_lines(caplog)
    assert (line["status"], line["tenant"], line["error"]) == (402, "globex", "budget_exceeded")
    assert line["outcome"] == "denied" and "charged" not in line and "reservation_id" not in line


def test_text_lines_in_development(
    client: FlaskClient, provisioner: Provisioner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    client.post("/summarize", json={"text": PROMPT}, headers=auth_headers("acme"))
    (record,) = [r for r in caplog.records if r.name == LOGGER_NAME]
    message = record.getMessage()
    assert message.startswith("POST /summarize 200 ") and "outcome=committed" in message
    assert PROMPT not in message


def test_a_stream_is_logged_once_it_has_settled(
    json_app: Flask, provisioner: Provisioner, serve: Callable[[Flask], str]
) -> None:
    lines: list[dict[str, object]] = []
    logged = threading.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))
            logged.set()

    handler = Collect()
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    try:
        base = serve(json_app)
        body = {"prompt": "stream please", "max_tokens": 30, "stream": True}
        with httpx.stream(
            "POST", base + "/chat", json=body, headers=auth_headers("acme"), timeout=10
        ) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
        done = json.loads(events[-1].removeprefix("data: "))
        assert done["type"] == "done"
        # Written by the server thread when it closes the response, after the commit.
        assert logged.wait(10), "no log line after the stream ended"
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
    (line,) = lines
    assert (line["route"], line["status"], line["stream"]) == ("/chat", 200, True)
    assert line["charged"] == done["cost_usd_microcents"] == provisioner.balance("acme")["spent"]
    assert line["request_id"] == response.headers["X-Request-ID"]
