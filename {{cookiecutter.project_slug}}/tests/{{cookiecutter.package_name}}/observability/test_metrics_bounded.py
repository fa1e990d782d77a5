"""/metrics stays the same size whatever callers send: every label takes its values from a
closed set (unknown methods, paths, statuses, tenants and models fold into ``_other`` or
the unmatched route), in one process and summed over gunicorn-style worker processes."""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from conftest import Provisioner
from {{ cookiecutter.package_name }}.observability.metrics import (
    METHODS,
    OTHER,
    app_metrics,
    method_label,
    status_label,
)
from localcycles import LocalCyclesServer

PROJECT = Path(__file__).resolve().parents[3]
REQUESTS = "http_requests_total"


ROUTES = ("/chat", "/budget", "/metrics", "/healthz")


def hostile_requests(client: FlaskClient, rounds: int, seed: int) -> None:
    """``rounds`` times: each route and a made-up path, each with a made-up 20-letter method
    and with real ones, with made-up credentials of either kind (every round makes the same
    kinds of request, with new made-up names)."""
    rng = random.Random(seed)
    for _ in range(rounds):
        word = "".join(rng.choices(string.ascii_uppercase, k=20))
        made_up = {"Authorization": f"Bearer {word}", "X-Tenant-ID": word.lower()}
        for path in (*ROUTES, f"/{word.lower()}/{rng.randrange(10**9)}"):
            for method in (word, "POST", "GET", "DELETE"):
                client.open(path, method=method, json={"prompt": word}, headers=made_up)


def series(text: str, name: str = REQUESTS) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(text: str, name: str = REQUESTS) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def series_of_every_metric(text: str) -> list[dict[str, str]]:
    return [s.labels for family in text_string_to_metric_families(text) for s in family.samples]


def labelsets(found: list[dict[str, str]]) -> set[tuple[tuple[str, str], ...]]:
    return {tuple(sorted(labels.items())) for labels in found}


def exposition(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_made_up_methods_and_paths_add_no_series(client: FlaskClient) -> None:
    hostile_requests(client, 1, seed=1)  # every kind of request, once
    before = exposition(client)
    hostile_requests(client, 25, seed=2)  # 500 more
    after = exposition(client)
    # Same series, same lines, same size within the counts' digits: only the counts moved.
    assert len(after.splitlines()) == len(before.splitlines())
    assert labelsets(series(after)) == labelsets(series(before))
    methods = {s["method"] for s in series(after)}
    assert OTHER in methods
    assert methods <= METHODS | {OTHER}
    assert {s["route"] for s in series(after)} <= {*ROUTES, "unmatched"}
    tenants = {s["tenant"] for s in series_of_every_metric(after) if "tenant" in s}
    assert tenants <= {*app_metrics(client.application).settings.tenants, OTHER}


def test_labels_outside_their_closed_set_fold(app: Flask) -> None:
    assert method_label("GET") == "GET"
    assert method_label("PATCH") == "PATCH"
    assert method_label("get") == OTHER  # methods are case-sensitive (RFC 9110)
    assert method_label("ABCDEFGHIJKLMNOPQRST") == OTHER
    assert status_label(404) == "404"
    assert status_label(299) == OTHER
    assert status_label(-1) == OTHER
    metrics = app_metrics(app)
    model = metrics.settings.llm_model
    assert metrics.model_label(model) == model
    assert metrics.model_label(f"{model}-2025-01-31") == model  # a dated snapshot of it
    assert metrics.model_label("some-other-model") == OTHER
    assert metrics.tenant_label("somebody-else") == OTHER


def test_each_served_model_keeps_its_own_label(
    cycles_server: LocalCyclesServer, make_app: Callable[..., Flask]
) -> None:
    """With LLM_MODELS, every served model is a label of its own, a snapshot of the longer
    name included; an unserved name still folds."""
    app = make_app(cycles_server.base_url, LLM_MODELS="ours-s=0.10/0.40,ours-s-pro=1.00/4.00")
    metrics = app_metrics(app)
    assert metrics.model_label("ours-s") == "ours-s"
    assert metrics.model_label("ours-s-pro-2026-01-01") == "ours-s-pro"
    assert metrics.model_label("ours-s-2026-01-01") == "ours-s"
    assert metrics.model_label(metrics.settings.llm_model) == metrics.settings.llm_model
    assert metrics.model_label("ours-m") == OTHER


WORKER = """
import sys
from pathlib import Path
from conftest import app_env
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close
sys.path.insert(0, sys.argv[3])
from test_metrics_bounded import hostile_requests
app = create_app(app_env(sys.argv[1], Path(sys.argv[2])))
hostile_requests(app.test_client(), int(sys.argv[4]), seed=int(sys.argv[5]))
close(app)
"""


def test_worker_processes_add_no_series_either(
    cycles_server: LocalCyclesServer,
    provisioner: Provisioner,
    make_app: Callable[..., Flask],
    tmp_path: Path,
) -> None:
    """In multiprocess mode (gunicorn workers) /metrics sums the workers' files: hostile
    traffic in two workers gives the series one worker's first requests gave."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), str(PROJECT / "tests")]),
    }
    here = str(Path(__file__).parent)
    reader = make_app(cycles_server.base_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))

    def run(count: int, seed: int) -> None:
        args = [cycles_server.base_url, str(tmp_path / f"w{seed}"), here, str(count), str(seed)]
        worker = subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env, cwd=PROJECT)
        assert worker.wait(timeout=120) == 0

    run(1, seed=1)
    before = series(exposition(reader.test_client()))
    run(15, seed=2)
    text = exposition(reader.test_client())
    after = series(text)
    assert labelsets(after) == labelsets(before)
    assert {s["method"] for s in after} <= METHODS | {OTHER}
    per_round = (len(ROUTES) + 1) * 4
    assert total(text) == 16 * per_round  # every request of both workers, summed
