"""The gevent worker: the app is imported in the worker, after gevent patched the standard
library, never in gunicorn's master (a real gunicorn, over a real socket)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from support.gunicorn_kit import PATIENCE_S, PROJECT, free_port, gunicorn, serving_env

# Served instead of the conf file's app: the same app, plus what the worker saw when it
# began importing the app.
SERVED_APP = """
import sys

from flask import jsonify
from gevent import monkey

SEEN = dict(
    patched=monkey.is_module_patched("socket") and monkey.is_module_patched("threading"),
    app_already_imported=sorted(
        name for name in sys.modules
        if name.startswith("{package}.") and not name.startswith("{package}.serving")
    ),
)

from {package} import create_app

app = create_app()
app.add_url_rule("/test/seen", "seen", lambda: jsonify(SEEN))
"""


def test_the_app_is_imported_after_gevent_patched_the_worker(tmp_path: Path) -> None:
    (tmp_path / "served_app.py").write_text(SERVED_APP.format(package="{{ cookiecutter.package_name }}"))
    with gunicorn(tmp_path, "served_app:app", GUNICORN_WORKER_CLASS="gevent") as server:
        url = f"http://127.0.0.1:{server.port}/test/seen"
        with urllib.request.urlopen(url, timeout=PATIENCE_S) as response:
            seen = json.loads(response.read())
        assert "Using worker: GeventWorker" in server.log_text()
    assert seen == {"patched": True, "app_already_imported": []}


def test_a_worker_stopped_while_it_boots_stops(tmp_path: Path) -> None:
    """A SIGTERM as the worker starts (gevent patching the standard library meanwhile)
    reaches the worker's own handler: it exits, and is not killed after the graceful
    timeout."""
    env = serving_env(tmp_path, PORT=str(free_port()), GUNICORN_WORKER_CLASS="gevent")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(PROJECT / "gunicorn.conf.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert server.stdout is not None
    seen = []
    try:
        for line in server.stdout:
            seen.append(line)
            if "Booting worker" in line:
                os.killpg(server.pid, signal.SIGTERM)  # as a deploy stops the container
                break
        seen.extend(server.stdout)  # until gunicorn has exited
        server.wait(timeout=PATIENCE_S)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    log = "".join(seen)
    assert "Worker exiting" in log, log
    assert "SIGKILL" not in log and "graceful timeout" not in log.lower(), log
