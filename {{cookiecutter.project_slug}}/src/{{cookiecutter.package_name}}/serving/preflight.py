"""The app's settings, checked for gunicorn's master in a process of its own.

The master must not import the app: its workers are forks of it, and the gevent worker
patches the standard library only once a worker starts, so whatever the master imported
(sockets, locks, thread-locals of the HTTP clients) would escape the patching. The check
therefore runs as ``python -m <package>.serving.preflight``: it prints the problems, one line
each, or the start-up line, which the master then keeps its workers from logging again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

PACKAGE = __name__.split(".")[0]


@dataclass(frozen=True)
class Outcome:
    problems: list[str]
    startup_line: str | None
    exposed_listener_warning: str | None = None  # web/caller_scheme.py's, for when_ready


def check() -> Outcome:
    """In the master: run the check with the master's environment and import path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    done = subprocess.run(
        [sys.executable, "-m", __name__],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # The start-up line (logged by the check, as the app logs it) or a crash's traceback.
    sys.stderr.write(done.stderr)
    sys.stderr.flush()
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        warning = answer.get("exposed_listener_warning")
        return Outcome(list(answer["problems"]), answer["startup_line"], warning)
    except (IndexError, ValueError, KeyError, TypeError):
        return Outcome([f"the check of the app's settings failed (exit {done.returncode})"], None)


def quiet_startup_line(line: str) -> None:
    """In a worker: the master has logged the start-up line; the app does not repeat it."""
    logger = logging.getLogger(f"{PACKAGE}.settings_source")
    logger.addFilter(lambda record: record.getMessage() != line)


def main() -> int:
    """In the check's own process: the app's settings, as gunicorn's workers will read them."""
    from .. import settings_source
    from ..config import ConfigError
    from ..web.caller_scheme import EXPOSED_LISTENER_WARNING

    try:
        settings = settings_source.load(settings_source.instance_path(), require_app_env=True)
    except ConfigError as error:
        problems = list(error.problems)
        print(json.dumps({"problems": problems, "startup_line": None}))
        return 1
    line = settings_source.startup_line(settings, settings_source.environment())
    warning = EXPOSED_LISTENER_WARNING
    print(json.dumps({"problems": [], "startup_line": line, "exposed_listener_warning": warning}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
