"""Loopback HTTP helpers shared by the template tests that run a baked app as a server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A port that was free a moment ago (for servers that must be told their port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One JSON request on a fresh connection (so the kernel spreads them over workers)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s.

    ``timeout`` only stops a hang: nothing here asserts how fast the thing happens.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def wait_until_serving(
    base: str, server: subprocess.Popen[Any], log: Path, patience_s: float = 60.0
) -> None:
    """Poll ``base/healthz`` until it answers 200; fail with the server's log if it exits.

    ``patience_s`` only stops a hang: nothing here asserts how fast a server starts.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if http("GET", base + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no answer from {base} in {patience_s:g} s"
        time.sleep(0.1)


def stop_group(server: subprocess.Popen[Any]) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it does not stop."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
