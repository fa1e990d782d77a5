"""GET /metrics: what the app counts, who may read it, and the sum over gunicorn workers."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import Provisioner, assert_error, auth_headers
from {{ cookiecutter.package_name }}.budget import pricing
from {{ cookiecutter.package_name }}.observability.metrics import OTHER_TENANT, app_metrics
from localcycles import LocalCyclesServer

PROJECT = Path(__file__).resolve().parents[3]


def scrape(
    client: FlaskClient, **headers: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of GET /metrics, keyed by name and labels."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_holds_denials_spend_and_tokens_are_counted(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    provisioner.set_budget("globex", 1)
    answers = [
        client.post("/chat", json={"prompt": p, "max_tokens": 30}, headers=auth_headers("acme"))
        for p in ("first question", "second, longer question about budgets")
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert client.post("/chat", json={"prompt": 1}, headers=auth_headers("acme")).status_code == 400
    assert (
        client.post("/chat", json={"prompt": "hi"}, headers=auth_headers("globex")).status_code
        == 402
    )

    samples = scrape(client)
    bodies = [a.get_json() for a in answers]
    spent = provisioner.balance("acme")["spent"]
    model = bodies[0]["model"]
    assert value(samples, "http_requests_total", route="/chat", method="POST", status="200") == 2
    assert value(samples, "http_requests_total", route="/chat", method="POST", status="400") == 1
    assert value(samples, "http_requests_total", route="/chat", method="POST", status="402") == 1
    assert (
        value(samples, "cycles_reservations_total", route="chat", outcome="held", tenant="acme")
        == 2
    )
    assert (
        value(samples, "cycles_reservations_total", route="chat", outcome="denied", tenant="globex")
        == 1
    )
    assert value(samples, "cycles_denials_total", reason="budget_exceeded", tenant="globex") == 1
    assert value(samples, "cycles_settlements_total", outcome="committed", tenant="acme") == 2
    assert value(samples, "cycles_charged_usd_microcents_total", tenant="acme") == spent
    assert spent == sum(b["cost_usd_microcents"] for b in bodies)
    # The ratio of what each call cost to what it reserved.
    estimates = [
        pricing.estimate("first question", max_tokens=30),
        pricing.estimate("second, longer question about budgets", max_tokens=30),
    ]
    ratios = [b["cost_usd_microcents"] / e for b, e in zip(bodies, estimates, strict=True)]
    assert value(samples, "cycles_cost_estimate_ratio_count", route="chat") == 2
    assert value(samples, "cycles_cost_estimate_ratio_sum", route="chat") == pytest.approx(
        sum(ratios)
    )
    assert all(0 < r <= 1 for r in ratios)
    tokens_in = sum(b["usage"]["input_tokens"] for b in bodies)
    tokens_out = sum(b["usage"]["output_tokens"] for b in bodies)
    assert value(samples, "llm_tokens_total", model=model, direction="input") == tokens_in
    assert value(samples, "llm_tokens_total", model=model, direction="output") == tokens_out
    # Cycles latency per operation: two reserves and commits answered, one reserve refused.
    assert (
        value(samples, "cycles_call_duration_seconds_count", operation="reserve", result="ok") == 2
    )
    assert (
        value(samples, "cycles_call_duration_seconds_count", operation="commit", result="ok") == 2
    )
    assert (
        value(samples, "cycles_call_duration_seconds_count", operation="reserve", result="409") == 1
    )


def test_a_released_hold_counts_as_released(
    app: Flask, client: FlaskClient, provisioner: Provisioner
) -> None:
    from {{ cookiecutter.package_name }}.llm import ProviderError

    class Failing:
        name, model = "failing", "failing-model"

        def complete(self, **_: object) -> None:
            raise ProviderError("down")

    app.extensions["llm"] = Failing()
    assert (
        client.post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme")).status_code == 502
    )
    samples = scrape(client)
    assert value(samples, "cycles_settlements_total", outcome="released", tenant="acme") == 1
    assert value(samples, "cycles_cost_estimate_ratio_sum", route="chat") == 0


def test_tenant_labels_are_only_configured_tenants(app: Flask) -> None:
    metrics = app_metrics(app)
    assert metrics.tenant_label("acme") == "acme"
    assert metrics.tenant_label("somebody-else") == OTHER_TENANT


def test_a_metrics_token_is_required_when_set(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    client = make_app(cycles_server.base_url, METRICS_TOKEN="scrape-secret").test_client()
    assert_error(client.get("/metrics"), 401, "unauthorized")
    assert_error(client.get("/metrics", headers=auth_headers("acme")), 401, "unauthorized")
    bad = {"Authorization": "Bearer scrape-secreT"}
    assert_error(client.get("/metrics", headers=bad), 401, "unauthorized")
    scrape(client, Authorization="Bearer scrape-secret")


def test_metrics_are_off_in_production_until_a_token_is_set(
    cycles_server: LocalCyclesServer, provisioner: Provisioner, make_app: Callable[..., Flask]
) -> None:
    closed = make_app(cycles_server.base_url, APP_ENV="production").test_client()
    assert_error(closed.get("/metrics"), 404, "not_found")
    opened = make_app(cycles_server.base_url, APP_ENV="production", METRICS_TOKEN="t0ken")
    scrape(opened.test_client(), Authorization="Bearer t0ken")


WORKER = """
import sys
from pathlib import Path
from conftest import app_env, auth_headers
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close
app = create_app(app_env(sys.argv[1], Path(sys.argv[2])))
client = app.test_client()
for _ in range(2):
    response = client.post("/chat", json={"prompt": "hi"}, headers=auth_headers("acme"))
    assert response.status_code == 200
close(app)
"""


def test_several_worker_processes_add_up(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    """Two processes in multiprocess mode (as gunicorn workers): /metrics shows the sum."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), str(PROJECT / "tests")]),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, cycles_server.base_url, str(tmp_path / f"w{n}")],
            env=env,
            cwd=PROJECT,
        )
        for n in range(2)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    reader = make_app(cycles_server.base_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    samples = scrape(reader.test_client())
    assert value(samples, "http_requests_total", route="/chat", method="POST", status="200") == 4
    assert value(samples, "cycles_settlements_total", outcome="committed", tenant="acme") == 4
    spent = provisioner.balance("acme")["spent"]
    assert value(samples, "cycles_charged_usd_microcents_total", tenant="acme") == spent > 0


@pytest.fixture(autouse=True)
def signal_mask() -> Iterator[None]:
    """gunicorn's pre_fork holds the stop signals for the worker it is about to fork (none
    is forked here): give them back, or every process this test run starts later would
    inherit them held and ignore SIGTERM."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def test_gunicorn_prepares_the_metrics_directory_and_forgets_dead_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    stale = tmp_path / "counter_999.db"
    stale.write_bytes(b"from an earlier run")
    conf = runpy.run_path(str(PROJECT / "gunicorn.conf.py"))
    conf["pre_fork"](SimpleNamespace(), SimpleNamespace())
    assert not stale.exists()
    live_gauge = tmp_path / "gauge_livesum_4242.db"  # what a worker's live gauge leaves
    live_gauge.write_bytes(b"")
    conf["child_exit"](SimpleNamespace(), SimpleNamespace(pid=4242))
    assert not live_gauge.exists()
    conf["on_exit"](SimpleNamespace())
    assert tmp_path.is_dir()  # given by the operator: kept


def test_gunicorn_removes_the_metrics_directory_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored afterwards
    conf = runpy.run_path(str(PROJECT / "gunicorn.conf.py"))
    conf["pre_fork"](SimpleNamespace(), SimpleNamespace())
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir()
    conf["on_exit"](SimpleNamespace())
    assert not made.exists()
