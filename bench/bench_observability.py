"""What request ids, request log lines and Prometheus metrics cost per request (issue 13).

Bakes the default project from the working tree and, in this process, measures:

1. the bookkeeping of one guarded request: its trace, the metrics of its reservation,
   settlement, two Cycles calls and the request itself, and its JSON log line (formatted,
   sent to a handler that drops it), per request;
2. one ``GET /metrics`` exposition after those requests (one process, values in memory);
3. ``GET /healthz`` through Flask's test client, with the request-id and log hooks as
   every request has them.

Usage::

    .venv/bin/python bench/bench_observability.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1]
COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")
ROUNDS = 5


def bake(workdir: Path) -> tuple[Path, str]:
    subprocess.run(
        [str(COOKIECUTTER), "--no-input", "-o", str(workdir), str(TEMPLATE), "llm_provider=fake"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (project,) = workdir.iterdir()
    (package,) = (
        p.name
        for p in (project / "src").iterdir()
        if (p / "__init__.py").exists() and p.name != "localcycles"
    )
    return project, package


def per_request_us(package: str, settings: Any, requests: int) -> tuple[float, Any]:
    """Median over rounds of the bookkeeping of one guarded request, in microseconds."""
    metrics_module = import_module(f"{package}.metrics")
    request_log = import_module(f"{package}.request_log")
    reservations = import_module(f"{package}.reservations")
    from runcycles import CyclesResponse

    metrics = metrics_module.Metrics(settings)
    answered = CyclesResponse.success(200, {}, {})
    usage = reservations.Usage(9, 11, "fake-model", 3)
    settlement = reservations.Settlement("committed", 5625)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(requests):
            trace = request_log.RequestTrace("req-1", "POST", time.monotonic(), metrics=metrics)
            hold = reservations.Hold("acme", "chat", 29475, "enforce", reservation_id="rsv_1")
            hold.trace = trace
            request_log.reserved(hold)
            metrics.cycles_call("reserve", 0.002, answered)
            metrics.cycles_call("commit", 0.002, answered)
            request_log.settled(hold, usage, settlement)
            trace.route, trace.status, trace.tenant = "/chat", 200, "acme"
            trace.finish()
        rounds.append((time.perf_counter() - started) / requests * 1e6)
    return statistics.median(rounds), metrics


def scrape_ms(metrics: Any) -> float:
    rounds = []
    for _ in range(ROUNDS * 4):
        started = time.perf_counter()
        metrics.exposition()
        rounds.append((time.perf_counter() - started) * 1000)
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-observability-"))
    project, package = bake(workdir / "bake")
    sys.path[:0] = [str(project / "src")]
    config = import_module(f"{package}.config")
    request_log = import_module(f"{package}.request_log")
    request_logger = logging.getLogger(request_log.LOGGER_NAME)
    request_logger.addHandler(logging.NullHandler())  # format every line, print none
    request_logger.propagate = False
    request_logger.setLevel(logging.INFO)

    env = {"APP_ENV": "testing", "LLM_PROVIDER": "fake", "LOG_FORMAT": "json"}
    settings = config.Settings.from_env(env, workdir / "instance")
    cost_us, metrics = per_request_us(package, settings, args.requests)
    print(f"bookkeeping per guarded request (trace, metrics, JSON line): {cost_us:.1f} us")
    print(f"GET /metrics exposition, one process: {scrape_ms(metrics):.2f} ms")

    app = import_module(package).create_app(
        {**env, "CYCLES_LOCAL_DB": str(workdir / "ledger.sqlite3"),
         "CYCLES_JOURNAL_DIR": str(workdir / "journal")}
    )  # fmt: skip
    client = app.test_client()
    for _ in range(200):
        client.get("/healthz")
    samples = []
    for _ in range(2000):
        started = time.perf_counter()
        client.get("/healthz")
        samples.append((time.perf_counter() - started) * 1000)
    print(f"GET /healthz via the test client (request id + log line + metrics): "
          f"p50 {statistics.median(samples):.3f} ms")  # fmt: skip
    import_module(f"{package}.budget").close(app)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
