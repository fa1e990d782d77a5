"""Run the server as its own OS process: the CLI entry point and a spawner for tests/benchmarks.

The spawner runs ``python -m localcycles`` with this package's parent directory first on
``PYTHONPATH``, so the child imports this copy of the package whatever its working directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from .http.server import LocalCyclesServer
from .ledger.retention import DEFAULT_REPLAY_WINDOW_DAYS


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localcycles --db PATH [--port N] [--admin-key K] [--replay-window-days D]``.

    Prints the base URL on one line (flushed) once it accepts connections, then serves
    until SIGTERM or SIGINT.
    """
    parser = argparse.ArgumentParser(
        prog="localcycles", description="Local Cycles-protocol server (SQLite ledger)"
    )
    parser.add_argument("--db", required=True, help="SQLite ledger file (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("LOCALCYCLES_ADMIN_KEY"),
        help="enables /v1/admin (default: $LOCALCYCLES_ADMIN_KEY)",
    )
    parser.add_argument(
        "--replay-window-days",
        type=float,
        default=DEFAULT_REPLAY_WINDOW_DAYS,
        help="how long idempotent retries replay; older records are pruned (default: 7)",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    server = LocalCyclesServer(args.db, args.host, args.port, args.admin_key)
    try:
        server.ledger.replay_window_days = args.replay_window_days
    except ValueError as exc:
        server.ledger.close()
        parser.error(f"--replay-window-days: {exc}")
    server.start()
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(server.base_url, flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


def spawn_server_process(
    db_path: str, *, port: int = 0, admin_key: str | None = None, timeout: float = 15.0
) -> tuple[subprocess.Popen[str], str]:
    """Start a server in a child process on ``db_path``; return (process, base_url).

    The caller owns the process: ``proc.terminate(); proc.wait()``.
    """
    source_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inherited = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source_dir, inherited] if inherited else [source_dir]),
    }
    cmd = [sys.executable, "-m", "localcycles", "--db", db_path, "--port", str(port)]
    if admin_key:
        cmd += ["--admin-key", admin_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    result: list[str] = []
    ready = threading.Event()

    def read_then_drain() -> None:
        # The first line is the URL; the rest is read and dropped, so a chatty server never
        # blocks on a full pipe (it could then not even exit on SIGTERM).
        stream = proc.stdout
        try:
            result.append(stream.readline())  # type: ignore[union-attr]
            ready.set()
            while stream.readline():  # type: ignore[union-attr]
                pass
        except (OSError, ValueError):  # the caller closed the pipe
            pass
        finally:
            ready.set()

    threading.Thread(target=read_then_drain, daemon=True).start()
    ready.wait(timeout)
    url = result[0].strip() if result else ""
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"localcycles process did not start (got {url!r})")
    return proc, url
