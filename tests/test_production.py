"""The production path of a generated project: gunicorn, Docker, compose, pre-commit, CI,
cruft, LICENSE and README.

Docker cannot run here, so the container files are checked for what can be checked without
it: they parse, every file they copy exists, compose's settings are the ones the app reads
and are accepted by the app's own settings loader, and the bootstrap command provisions a
Cycles admin API (the embedded server) exactly as compose runs it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.baking import TEMPLATE_DIR, Baker, fresh_copy
from support.localhttp import free_port, http, stop_group, wait_until_serving
from support.runcache import shared_mypy_cache

VENV_BIN = Path(sys.executable).parent
PACKAGE = "llm_service"
# Three bakes cover every production file choice; DEFAULT has Docker, CI and MIT.
DEFAULT: dict[str, str] = {}
OTHER = {
    "tenant_auth": "trusted_header",
    "tenant_isolation": "tenant",
    "llm_provider": "fake",
    "license": "Apache-2.0",
}
BARE = {"license": "Proprietary", "use_docker": "no", "ci": "none"}
DOCKER_BAKES = pytest.mark.parametrize("answers", [DEFAULT, OTHER], ids=["default", "other"])


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """A clean environment that imports the baked package from its source tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "FLASK_"))}
    path = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    return {**env, "PATH": path, "PYTHONPATH": str(project / "src"), **extra}


# --- .env.example and config.py ----------------------------------------------------------

ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def env_example_names(project: Path) -> set[str]:
    return set(ENV_LINE.findall((project / ".env.example").read_text()))


def names_read_by(path: Path) -> set[str]:
    """Environment variable names a Python file mentions as string literals."""
    return set(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", path.read_text()))


def app_setting_names(project: Path) -> set[str]:
    # config.py and the modules that read its sections (config_reader.py, config_callers.py...)
    config = set().union(*map(names_read_by, (project / "src" / PACKAGE).glob("config*.py")))
    provider_keys = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}  # read as f"{PROVIDER}_API_KEY"
    serving = names_read_by(project / "src" / PACKAGE / "serving" / "settings.py")
    return config | names_read_by(project / "gunicorn.conf.py") | serving | provider_keys


# --- gunicorn ------------------------------------------------------------------------------


def load_gunicorn_conf(project: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in ("PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_BIND", "LLM_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLASK_SKIP_DOTENV", "1")  # the conf file would export a stray .env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The conf file reads its settings with the package's serving/: this bake's package.
    monkeypatch.syspath_prepend(str(project / "src"))
    for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
        monkeypatch.delitem(sys.modules, name)
    return runpy.run_path(str(project / "gunicorn.conf.py"))


def test_gunicorn_conf_reads_the_environment(bake: Baker, monkeypatch: pytest.MonkeyPatch) -> None:
    project = bake(**DEFAULT)
    conf = load_gunicorn_conf(project, monkeypatch)
    assert conf["wsgi_app"] == f"{PACKAGE}:create_app()"
    assert conf["bind"] == ["127.0.0.1:8000"], "this machine only, unless told otherwise"
    # gevent by default (serving/gevent_worker.py), gthread one setting away; never preloaded.
    assert conf["worker_class"].__name__ == "GeventWorker" and not conf["preload_app"]
    assert 1 <= conf["workers"] <= 4 and conf["worker_connections"] == 1000
    assert conf["timeout"] > 30 and conf["graceful_timeout"] >= conf["timeout"]
    assert conf["accesslog"] == "-" and "%(s)s" in conf["access_log_format"]

    conf = load_gunicorn_conf(
        project, monkeypatch, PORT="9001", WEB_CONCURRENCY="3", GUNICORN_THREADS="5",
        LLM_TIMEOUT="120",
    )  # fmt: skip
    assert (conf["bind"], conf["workers"], conf["threads"]) == (["127.0.0.1:9001"], 3, 5)
    assert conf["timeout"] > 120, "a worker must outlive the LLM timeout"
    assert conf["worker_class"].__name__ == "GeventWorker"
    conf = load_gunicorn_conf(project, monkeypatch, GUNICORN_WORKER_CLASS="gthread")
    assert conf["worker_class"].__name__ == "ThreadWorker"


def test_gunicorn_accepts_the_config_and_imports_the_app(bake: Baker, tmp_path: Path) -> None:
    project = bake(**DEFAULT)
    env = project_env(project, APP_ENV="testing", CYCLES_JOURNAL_DIR=str(tmp_path / "j"))
    result = run([sys.executable, "-m", "gunicorn", "--check-config"], project, env)
    assert result.returncode == 0, result.stdout + result.stderr


SECRET = "cyc_live_Zx9SecretPart"  # a Cycles key pasted without its tenant
BAD_PRODUCTION = {
    "APP_ENV": "production",
    "CYCLES_APP": "x/workflow:y",
    "CYCLES_TENANT_API_KEYS": SECRET,
    "CYCLES_JOURNAL_DIR": "/nonexistent/journal",
}


def reported_problems(output: str) -> list[str]:
    """The lines of the `Error: N configuration problems:` block, checked for its shape."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Error: "))
    count = int(re.fullmatch(r"Error: (\d+) configuration problems:", lines[start]).group(1))
    problems = lines[start + 1 : start + 1 + count]
    assert all(re.match(r"  [A-Z][A-Z0-9_]+[ =:]", line) for line in problems), problems
    return problems


def test_bad_settings_are_listed_without_a_traceback_by_every_entry_point(
    bake: Baker, tmp_path: Path
) -> None:
    """gunicorn, `flask run` and the app's CLI: exit 1, every problem once, one line each,
    no traceback, no secret."""
    project = bake(**DEFAULT)
    env = project_env(project, **BAD_PRODUCTION)
    flask = str(VENV_BIN / "flask")
    commands = {
        "gunicorn": [sys.executable, "-m", "gunicorn"],
        "flask run": [flask, "--app", PACKAGE, "run", "--port", str(free_port())],
        "flask cycles": [flask, "--app", PACKAGE, "cycles", "provision"],
    }
    reports = {}
    for name, command in commands.items():
        result = run(command, project, env)
        output = result.stdout + result.stderr
        assert result.returncode == 1, (name, output)
        assert "Traceback" not in output and SECRET[:12] not in output, (name, output)
        reports[name] = reported_problems(output)
    assert reports["gunicorn"] == reports["flask run"] == reports["flask cycles"]
    named = [line.split()[0].split("=")[0].rstrip(":") for line in reports["gunicorn"]]
    assert sorted(named) == sorted(
        ["CYCLES_BASE_URL", "CYCLES_TENANT_API_KEYS", "TENANT_API_KEYS", "OPENAI_API_KEY",
         "CYCLES_APP"]
    )  # fmt: skip


def test_numbers_gunicorn_cannot_use_in_dotenv_are_one_line_each(
    bake: Baker, tmp_path: Path
) -> None:
    """`gunicorn` as users start it, its settings in `.env`: no traceback, a line each."""
    project = bake(**DEFAULT)
    bad = {
        "LLM_TIMEOUT": "nan", "CYCLES_READ_TIMEOUT": "-inf", "GUNICORN_THREADS": "1e999",
        "WEB_CONCURRENCY": "inf",
    }  # fmt: skip
    lines = [f"{name}={value}" for name, value in {"APP_ENV": "development", **bad}.items()]
    (project / ".env").write_text("\n".join(lines) + "\n")
    try:
        env = project_env(project, CYCLES_LOCAL_DB=str(tmp_path / "ledger.sqlite3"))
        for name in (*bad, "APP_ENV"):
            env.pop(name, None)  # only .env says them
        result = run([sys.executable, "-m", "gunicorn"], project, env)
    finally:
        (project / ".env").unlink()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    named = [line.split()[0].split("=")[0].rstrip(":") for line in reported_problems(output)]
    assert sorted(named) == sorted(bad), output


def test_gunicorn_stops_on_a_worker_start_up_error_without_a_traceback(
    bake: Baker, tmp_path: Path
) -> None:
    """What only a starting app can find wrong (the embedded ledger's port is taken) stops
    gunicorn with the app's own one-line message ("App failed to load": exit 4)."""
    project = bake(**DEFAULT)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = project_env(
            project, APP_ENV="development", CYCLES_LOCAL_PORT=str(port), WEB_CONCURRENCY="1",
            PORT=str(free_port()), CYCLES_LOCAL_DB=str(tmp_path / "ledger.sqlite3"),
            CYCLES_JOURNAL_DIR=str(tmp_path / "journal"),
        )  # fmt: skip
        result = run([sys.executable, "-m", "gunicorn"], project, env)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert "Traceback" not in output
    assert f"Error: CYCLES_LOCAL_PORT={port}: cannot listen" in output


def test_gunicorn_warns_when_trusted_header_auth_listens_beyond_loopback(
    bake: Baker, tmp_path: Path
) -> None:
    project = bake(**OTHER)  # trusted_header: callers are whoever sets X-Tenant-ID
    port = free_port()
    env = project_env(
        project, APP_ENV="development", GUNICORN_BIND=f"0.0.0.0:{port}", WEB_CONCURRENCY="1",
        CYCLES_LOCAL_DB=str(tmp_path / "ledger.sqlite3"), CYCLES_JOURNAL_DIR=str(tmp_path / "j"),
    )  # fmt: skip
    log = tmp_path / "gunicorn.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn"], cwd=project, env=env, stdout=sink,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        # Stop only once the worker serves: a SIGTERM that reaches a worker between its fork
        # and gunicorn installing the worker's handlers is lost, and the arbiter then waits
        # the whole graceful_timeout for it.
        wait_until_serving(f"http://127.0.0.1:{port}", server, log)
    finally:
        stop_group(server)
    lines = log.read_text().splitlines(keepends=True)
    seen = lines[: next(i for i, line in enumerate(lines) if "Booting worker" in line)]
    warnings = [line for line in seen if "[WARNING]" in line]
    assert len(warnings) == 1, "".join(seen)
    assert f"http://0.0.0.0:{port} with trusted_header auth" in warnings[0]
    assert "X-Tenant-ID" in warnings[0]


# --- Dockerfile ----------------------------------------------------------------------------


def runtime_env(project: Path) -> dict[str, str]:
    """ENV of the final (runtime) stage: what the containers start with."""
    steps = dockerfile_instructions(project)
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    return dict(
        item.split("=", 1)
        for kind, arg in steps[last_from:]
        if kind == "ENV"
        for item in arg.split()
    )


def dockerfile_instructions(project: Path) -> list[tuple[str, str]]:
    text = (project / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerignored(project: Path, relative: str) -> bool:
    patterns = [
        line.strip()
        for line in (project / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(not p.startswith("!") and Path(relative).match(p.lstrip("*/")) for p in patterns)


@DOCKER_BAKES
def test_dockerfile_is_multi_stage_slim_and_non_root(bake: Baker, answers: dict) -> None:
    project = bake(**answers)
    steps = dockerfile_instructions(project)
    kinds = [kind for kind, _ in steps]
    froms = [arg for kind, arg in steps if kind == "FROM"]
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    assert any("pip wheel" in arg for kind, arg in steps if kind == "RUN")
    assert any(arg.startswith("--from=build /wheels") for kind, arg in steps if kind == "COPY")
    user = [arg for kind, arg in steps if kind == "USER"]
    assert user and user[-1] not in {"root", "0"}
    assert kinds.index("USER") < kinds.index("CMD") and kinds[-1] == "CMD"
    health = next(arg for kind, arg in steps if kind == "HEALTHCHECK")
    assert '"python", "-c"' in health and "/healthz" in health
    cmd = json.loads(next(arg for kind, arg in steps if kind == "CMD"))
    assert cmd == ["gunicorn"]
    env = runtime_env(project)
    assert (env["FLASK_APP"], env["APP_ENV"], env["PORT"]) == (PACKAGE, "production", "8000")
    # gunicorn binds 127.0.0.1 by default; in the container it must listen on every interface.
    assert env["GUNICORN_BIND"] == "0.0.0.0"
    # Every file the build copies from the context exists and is not .dockerignored.
    for kind, arg in steps:
        if kind == "COPY" and not arg.startswith("--from"):
            *sources, _ = arg.split()
            for source in sources:
                assert (project / source).exists(), f"COPY {source}: missing"
                assert not dockerignored(project, source), f"COPY {source}: .dockerignored"
    # The non-root user must be able to create Flask's instance folder of the installed app.
    assert f"/usr/local/var/{PACKAGE}-instance" in (project / "Dockerfile").read_text()


# --- compose.yaml --------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: object, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, for the test's sample .env."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"compose requires {name}: {arg}")
        return arg or ""

    return INTERPOLATION.sub(one, str(value)).replace("$$", "$")


def sample_dotenv(answers: Mapping[str, str]) -> dict[str, str]:
    """What a user puts in .env before `docker compose up` (see the README)."""
    env = {"REDIS_PASSWORD": "redis-secret", "ADMIN_API_KEY": "admin-secret"}
    # The README's step: base64 of 32 random bytes (the admin server's CryptoService).
    env["WEBHOOK_SECRET_ENCRYPTION_KEY"] = base64.b64encode(b"k" * 32).decode()
    env["CYCLES_WEBHOOK_SECRET"] = "cycles-webhook-secret"  # the app's receiver verifies it
    if answers.get("tenant_auth", "api_key") == "api_key":
        env["TENANT_API_KEYS"] = "acme=" + "a" * 64 + ",globex=" + "b" * 64
    else:
        env["TENANTS"] = "acme,globex"
    if answers.get("llm_provider", "openai") != "fake":
        env[answers.get("llm_provider", "openai").upper() + "_API_KEY"] = "sk-test"
    return env


def service_env(service: Mapping[str, Any], dotenv: Mapping[str, str]) -> dict[str, str]:
    return {k: interpolate(v, dotenv) for k, v in service.get("environment", {}).items()}


def env_files(service: Mapping[str, Any]) -> list[str]:
    entries = service.get("env_file", [])
    entries = [entries] if isinstance(entries, str) else entries
    return [entry if isinstance(entry, str) else entry["path"] for entry in entries]


def container_env(
    project: Path, service: Mapping[str, Any], dotenv: Mapping[str, str]
) -> dict[str, str]:
    """What a container of ``service`` starts with: the image's ENV, under its env_file
    (``.env``: ``dotenv``), under its ``environment`` (compose's precedence)."""
    from_files = dict(dotenv) if ".env" in env_files(service) else {}
    return {**runtime_env(project), **from_files, **service_env(service, dotenv)}


def load_compose(project: Path) -> dict[str, Any]:
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    assert isinstance(compose, dict)
    return compose


@DOCKER_BAKES
def test_compose_runs_the_app_beside_the_pinned_cycles_stack(bake: Baker, answers: dict) -> None:
    project = bake(**answers)
    services = load_compose(project)["services"]
    assert {"redis", "cycles-server", "cycles-admin", "cycles-events", "cycles-dashboard"} <= set(
        services
    )
    assert {"cycles-bootstrap", "app"} <= set(services)
    images = {name: s.get("image", "") for name, s in services.items()}
    assert images["cycles-server"] == "ghcr.io/runcycles/cycles-server:0.1.25.59"
    assert images["cycles-admin"] == "ghcr.io/runcycles/cycles-server-admin:0.1.25.55"
    assert images["cycles-events"] == "ghcr.io/runcycles/cycles-server-events:0.1.25.23"
    assert images["cycles-dashboard"] == "ghcr.io/runcycles/cycles-dashboard:0.1.25.43"
    assert images["redis"] == "redis:7-alpine"
    dotenv = sample_dotenv(answers)
    app = service_env(services["app"], dotenv)
    boot = service_env(services["cycles-bootstrap"], dotenv)

    # URLs the app and the bootstrap use name the right services on their published ports.
    urls = {"cycles-server": app["CYCLES_BASE_URL"], "cycles-admin": boot["CYCLES_ADMIN_URL"]}
    for target, url in urls.items():
        match = re.fullmatch(r"http://([a-z-]+):(\d+)", url)
        assert match and match.group(1) == target, url
        port = match.group(2)
        assert any(p.endswith(f":{port}:{port}") for p in services[target]["ports"])
        assert services[target]["healthcheck"]["test"][-1].startswith(f"http://127.0.0.1:{port}/")
    # The Cycles stack and the bootstrap agree on the admin key and the Redis password.
    for name in ("cycles-server", "cycles-admin"):
        stack = service_env(services[name], dotenv)
        assert stack["ADMIN_API_KEY"] == boot["CYCLES_ADMIN_API_KEY"] == "admin-secret"
        assert (stack["REDIS_HOST"], stack["REDIS_PASSWORD"]) == ("redis", "redis-secret")
    assert interpolate(services["redis"]["command"][-1], dotenv) == "redis-secret"
    # The app starts after the bootstrap finished, reading the keys it left in the volume.
    assert services["app"]["depends_on"]["cycles-bootstrap"]["condition"] == (
        "service_completed_successfully"
    )
    env_file = services["cycles-bootstrap"]["command"][-1]
    assert f". {env_file}" in services["app"]["command"][-1]
    assert services["app"]["command"][-1].endswith("exec gunicorn")
    container = container_env(project, services["app"], dotenv)
    for secret in ("CYCLES_ADMIN_API_KEY", "ADMIN_API_KEY", "REDIS_PASSWORD"):
        assert not container.get(secret), f"the serving app does not need {secret}"


@DOCKER_BAKES
def test_compose_runs_events_and_dashboard_with_a_required_encryption_key(
    bake: Baker, answers: dict
) -> None:
    """cycles-server-admin 0.1.25.54+ refuses to start without WEBHOOK_SECRET_ENCRYPTION_KEY
    and cycles-events decrypts with the same key: compose refuses to start without it (never
    an empty default), and every Cycles service gets the same one."""
    project = bake(**answers)
    services = load_compose(project)["services"]
    dotenv = sample_dotenv(answers)
    key = dotenv["WEBHOOK_SECRET_ENCRYPTION_KEY"]
    assert len(base64.b64decode(key)) == 32
    for name in ("cycles-server", "cycles-admin", "cycles-events"):
        assert service_env(services[name], dotenv)["WEBHOOK_SECRET_ENCRYPTION_KEY"] == key
        without = {k: v for k, v in dotenv.items() if k != "WEBHOOK_SECRET_ENCRYPTION_KEY"}
        with pytest.raises(AssertionError, match="compose requires WEBHOOK_SECRET_ENCRYPTION_KEY"):
            service_env(services[name], without)
    for name in ("cycles-admin", "cycles-events"):
        assert service_env(services[name], dotenv)["WEBHOOK_SECRET_ALLOW_PLAINTEXT"] == "false"
    events = service_env(services["cycles-events"], dotenv)
    assert (events["REDIS_HOST"], events["REDIS_PASSWORD"]) == ("redis", "redis-secret")
    # The events service's management port is unauthenticated: probed inside, not published.
    assert "ports" not in services["cycles-events"]
    assert services["cycles-events"]["healthcheck"]["test"][-1].startswith(
        f"http://127.0.0.1:{events['MANAGEMENT_PORT']}/"
    )
    # The dashboard's nginx proxies to the service names cycles-admin and cycles-server.
    dashboard = services["cycles-dashboard"]
    assert set(dashboard["depends_on"]) == {"cycles-admin", "cycles-server"}
    assert all(p.startswith("127.0.0.1:") for p in dashboard["ports"])
    readme = (project / "README.md").read_text()
    assert "WEBHOOK_SECRET_ENCRYPTION_KEY" in readme and "b64encode" in readme
    # Provisioning subscribes the app's receiver (on the compose network) with the secret
    # the app verifies events with (the app reads it from .env).
    boot = service_env(services["cycles-bootstrap"], dotenv)
    assert boot["CYCLES_WEBHOOK_URL"] == "http://app:8000/webhooks/cycles"
    assert boot["CYCLES_WEBHOOK_SECRET"] == dotenv["CYCLES_WEBHOOK_SECRET"]
    app = container_env(project, services["app"], dotenv)
    assert app["CYCLES_WEBHOOK_SECRET"] == dotenv["CYCLES_WEBHOOK_SECRET"]


@DOCKER_BAKES
def test_compose_settings_are_the_apps_settings(bake: Baker, answers: dict) -> None:
    project = bake(**answers)
    services = load_compose(project)["services"]
    known = app_setting_names(project) | {"CYCLES_BOOTSTRAP_BUDGET_USD"}
    for name in ("app", "cycles-bootstrap"):
        # A variable set to "" keeps a secret of .env (env_file) out of the container.
        given = {k for k, v in services[name]["environment"].items() if v != ""}
        unknown = given - known
        assert not unknown, f"{name} sets variables the app never reads: {unknown}"
    text = (project / "compose.yaml").read_text()
    undocumented = {m.group(1) for m in INTERPOLATION.finditer(text)} - env_example_names(project)
    assert not undocumented, f"compose reads variables missing from .env.example: {undocumented}"


# What compose itself decides for the app, over .env: production, the stack's Cycles server,
# where gunicorn listens inside the container, the journal on the instance volume.
COMPOSE_DECIDES = {
    "APP_ENV": "production",
    "CYCLES_BASE_URL": "http://cycles-server:7878",
    "PORT": "8000",
    "GUNICORN_BIND": "0.0.0.0",
    "CYCLES_JOURNAL_DIR": f"/usr/local/var/{PACKAGE}-instance/cycles-commit-journal",
}
STACK_SECRETS = ("REDIS_PASSWORD", "ADMIN_API_KEY", "WEBHOOK_SECRET_ENCRYPTION_KEY")


@DOCKER_BAKES
def test_compose_app_gets_every_setting_of_dotenv(bake: Baker, answers: dict) -> None:
    """env_file: .env, no fixed list: every documented setting in .env reaches the app,
    except what compose decides and the stack's secrets, which the app never needs."""
    project = bake(**answers)
    app = load_compose(project)["services"]["app"]
    assert app["env_file"] == [{"path": ".env", "required": False}]
    dotenv = {name: f"from-dotenv-{name.lower()}" for name in env_example_names(project)}
    dotenv.update(sample_dotenv(answers))
    container = container_env(project, app, dotenv)
    assert {name: container[name] for name in COMPOSE_DECIDES} == COMPOSE_DECIDES
    blanked = {name for name in dotenv if container[name] == ""}
    assert blanked == {*STACK_SECRETS, "CYCLES_ADMIN_API_KEY"}
    dropped = {n for n in dotenv if container[n] != dotenv[n]} - set(COMPOSE_DECIDES) - blanked
    assert not dropped, f"compose drops these settings of .env: {sorted(dropped)}"
    for name in ("METRICS_TOKEN", "CYCLES_MODE", "CYCLES_FAIL_OPEN", "LOG_FORMAT", "LLM_TIMEOUT"):
        assert container[name] == dotenv[name]


@contextmanager
def embedded_cycles(project: Path, tmp_path: Path, admin_key: str) -> Iterator[str]:
    """The generated project's own Cycles server in a child process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcycles", "--db", str(tmp_path / "stack.sqlite3"),
         "--admin-key", admin_key],
        env=project_env(project), stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), "embedded Cycles server did not start"
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def check_settings(project: Path, env: Mapping[str, str], tmp_path: Path) -> str:
    """Load the app's settings from exactly ``env`` (as the container would); print a summary."""
    script = (
        "import json, os, sys; from pathlib import Path;"
        f"from {PACKAGE}.config_reader import read_settings;"
        "s = read_settings(json.loads(sys.argv[1]), Path(sys.argv[2]));"
        "print(s.app_env, s.cycles_base_url, sorted(s.tenants))"
    )
    result = run(
        [sys.executable, "-c", script, json.dumps(dict(env)), str(tmp_path)], tmp_path,
        project_env(project),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@DOCKER_BAKES
def test_compose_bootstrap_provisions_and_the_app_accepts_its_keys(
    bake: Baker, answers: dict, tmp_path: Path
) -> None:
    """Run the bootstrap service's command with its environment, its admin URL pointed at
    the embedded server; then the app service's environment plus the written keys must be
    valid production settings."""
    project = bake(**answers)
    services = load_compose(project)["services"]
    dotenv = sample_dotenv(answers)
    dockerfile_env = runtime_env(project)
    command = services["cycles-bootstrap"]["command"]
    env_file = tmp_path / "bootstrap" / Path(command[-1]).name
    env_file.parent.mkdir()
    command = [*command[:-1], str(env_file)]
    assert command[:3] == ["flask", "cycles", "provision"]

    with embedded_cycles(project, tmp_path, admin_key=dotenv["ADMIN_API_KEY"]) as url:
        boot = {**dockerfile_env, **service_env(services["cycles-bootstrap"], dotenv)}
        boot["CYCLES_ADMIN_URL"] = url
        boot["CYCLES_JOURNAL_DIR"] = str(tmp_path / "journal")
        env = project_env(project, **boot)
        result = run([str(VENV_BIN / "flask"), *command[1:]], tmp_path, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "budget tenant:" in result.stdout
        first = env_file.read_text()
        again = run([str(VENV_BIN / "flask"), *command[1:]], tmp_path, env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert env_file.read_text() == first, "a re-run must keep the runtime keys"

    keys = {k: shlex.split(v)[0] for k, v in (line.split("=", 1) for line in first.splitlines())}
    app = {**container_env(project, services["app"], dotenv), **keys}
    summary = check_settings(project, app, tmp_path)
    assert summary == "production http://cycles-server:7878 ['acme', 'globex']"


@DOCKER_BAKES
def test_compose_rolls_planned_budgets_over_every_minute(
    bake: Baker, answers: dict, tmp_path: Path
) -> None:
    """cycles-rollover runs `flask cycles rollover` every minute against cycles-admin, with
    the bootstrap's tenants and plans and its record on a volume of its own; its command,
    run with its environment against the embedded server, reads the plans and answers."""
    project = bake(**answers)
    compose = load_compose(project)
    services = compose["services"]
    rollover = services["cycles-rollover"]
    dotenv = {**sample_dotenv(answers), "BUDGET_PLANS": "pro=5/month", "DEFAULT_PLAN": "pro"}
    env = service_env(rollover, dotenv)
    boot = service_env(services["cycles-bootstrap"], dotenv)
    # The tenants, plans and admin server are the bootstrap's.
    plans = ("BUDGET_PLANS", "TENANT_PLANS", "DEFAULT_PLAN", "CYCLES_APP")
    shared = {n for n in boot if n.startswith(("TENANT", "CYCLES_TENANT", "CYCLES_ADMIN"))}
    shared |= set(plans)
    assert {name: env.get(name) for name in shared} == {name: boot[name] for name in shared}
    assert (env["BUDGET_PLANS"], env["DEFAULT_PLAN"]) == ("pro=5/month", "pro")
    assert env["CYCLES_LOCAL_ROLLOVER"] == "false"
    assert set(env) <= app_setting_names(project), "it sets variables the app never reads"
    script = rollover["command"][-1]
    assert rollover["command"][:2] == ["sh", "-c"] and script.startswith("while :; do ")
    assert "flask cycles rollover ||" in script and "sleep 60" in script
    volume, folder = rollover["volumes"][0].split(":")
    assert volume in compose["volumes"] and volume not in {"bootstrap", "instance"}
    assert env["BUDGET_ROLLOVER_STATE"].startswith(folder + "/")
    assert rollover["depends_on"]["cycles-bootstrap"]["condition"] == (
        "service_completed_successfully"
    )
    with embedded_cycles(project, tmp_path, admin_key=dotenv["ADMIN_API_KEY"]) as url:
        local = {**runtime_env(project), **env, "CYCLES_ADMIN_URL": url}
        local["BUDGET_ROLLOVER_STATE"] = str(tmp_path / "rollover" / "budget-rollover.json")
        local["CYCLES_JOURNAL_DIR"] = str(tmp_path / "journal")
        command = [str(VENV_BIN / "flask"), "cycles", "rollover"]
        result = run(command, tmp_path, project_env(project, **local))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("plan pro): tracked from the month from " in x for x in lines)
    assert (tmp_path / "rollover" / "budget-rollover.json").exists()


# --- pre-commit and CI -----------------------------------------------------------------------


def git(project: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }  # fmt: skip
    result = run(["git", *args], project, env)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_pre_commit_passes_on_a_fresh_bake_with_local_hooks_only(
    bake: Baker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = fresh_copy(bake(**DEFAULT), tmp_path)
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "only PyPI is reachable"
    ids = {hook["id"] for hook in config["repos"][0]["hooks"]}
    assert {"ruff", "ruff-format", "mypy", "trailing-whitespace", "end-of-file"} <= ids
    assert {"check-yaml", "check-toml", "large-files"} <= ids
    git(project, "init", "-q")
    git(project, "add", "-A")
    env = project_env(project, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    env.pop("PYTHONPATH")
    with shared_mypy_cache(tmp_path_factory) as cache:
        env["MYPY_CACHE_DIR"] = str(cache)  # the mypy hook: warm third-party types
        command = [str(VENV_BIN / "pre-commit"), "run", "--all-files"]
        result = run(command, project, env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    # The hygiene hooks do catch problems.
    (project / "notes.txt").write_text("trailing \nno final newline")
    (project / "broken.yaml").write_text("a: [1, 2\n")
    git(project, "add", "-A")
    hooks = {
        "trailing-whitespace": "notes.txt:1:",
        "end-of-file": "notes.txt:2:",
        "check-yaml": "broken.yaml:",
    }
    for hook, complaint in hooks.items():
        command = [str(VENV_BIN / "pre-commit"), "run", hook, "--all-files"]
        result = run(command, project, env, timeout=60)
        assert result.returncode == 1 and complaint in result.stdout, (hook, result.stdout)


def readme_commands(project: Path) -> set[str]:
    readme = (project / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    return {line.strip() for block in blocks for line in block.splitlines()}


def test_ci_runs_the_readme_commands(bake: Baker) -> None:
    project = bake(**DEFAULT)
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and "push" in triggers
    steps = workflow["jobs"]["test"]["steps"]
    commands = [step["run"] for step in steps if "run" in step]
    assert commands == [
        "pip install -e '.[dev]'", "ruff check .", "ruff format --check .", "mypy", "pytest"
    ]  # fmt: skip
    documented = readme_commands(project)
    for command in commands:
        assert any(command in line for line in documented), f"README lacks `{command}`"
    text = (project / ".github" / "workflows" / "ci.yml").read_text()
    assert "${{ matrix.python-version }}" in text, "GitHub expressions must survive rendering"
    assert "docker build" in text


# --- LICENSE and README ---------------------------------------------------------------------


def test_license_text_follows_the_choice(bake: Baker) -> None:
    year = str(dt.datetime.now(dt.UTC).year)
    mit = (bake(**DEFAULT) / "LICENSE").read_text()
    assert mit.startswith("MIT License\n")
    assert f"Copyright (c) {year} Your Name\n" in mit
    assert "WITHOUT WARRANTY OF ANY KIND" in mit and mit.endswith("SOFTWARE.\n")
    apache = (bake(**OTHER) / "LICENSE").read_text()
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache
    assert "END OF TERMS AND CONDITIONS" in apache and f"Copyright {year} Your Name" in apache
    assert len(re.findall(r"^   \d\. ", apache, re.MULTILINE)) == 9
    assert not (bake(**BARE) / "LICENSE").exists()


def test_license_keeps_a_hostile_author_name_on_one_line(bake: Baker) -> None:
    name = '{% raw %}O\'Brien "Bob"\n{{ 7*7 }} <b>{% endraw %}'
    text = (bake(author_name=name) / "LICENSE").read_text()
    assert 'O\'Brien "Bob" {{ 7*7 }} <b>\n' in text


@pytest.mark.parametrize("answers", [DEFAULT, OTHER, BARE], ids=["default", "other", "bare"])
def test_readme_documents_routes_settings_and_production(bake: Baker, answers: dict) -> None:
    project = bake(**answers)
    readme = (project / "README.md").read_text()
    commands = readme_commands(project)
    assert any("pip install -e '.[dev]'" in command for command in commands)
    assert f"flask --app {PACKAGE} run" in commands and "pytest" in commands
    for route in ("/healthz", "/chat", "/summarize", "/budget"):
        assert re.search(rf"curl [^\n]*localhost:5000{route}\b", readme), route
    if answers.get("tenant_auth", "api_key") == "api_key":
        assert "Authorization: Bearer dev-key-acme" in readme
        assert f"flask --app {PACKAGE} tenants new-key" in readme
    else:
        assert "X-Tenant-ID: acme" in readme
    missing = {name for name in env_example_names(project) if f"`{name}`" not in readme}
    assert not missing, f"README settings table lacks {missing}"
    workspace = answers.get("tenant_isolation", "workspace") == "workspace"
    assert ("workspace:acme" if workspace else "tenant:acme/app") in readme
    assert ("docker compose up" in readme) == (answers.get("use_docker", "yes") == "yes")


# --- cruft ------------------------------------------------------------------------------------


def template_repo(tmp_path: Path) -> Path:
    """The template's working tree as a git repository (cruft clones templates with git)."""
    repo = tmp_path / "template"
    shutil.copytree(
        TEMPLATE_DIR,
        repo,
        ignore=shutil.ignore_patterns(".git", "bench", "__pycache__", ".*_cache", "tests"),
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template")
    return repo


@pytest.mark.slow
def test_cruft_create_then_update_round_trip(tmp_path: Path) -> None:
    repo = template_repo(tmp_path)
    out = tmp_path / "out"
    cruft = str(VENV_BIN / "cruft")
    env = project_env(tmp_path)
    result = run(
        [cruft, "create", str(repo), "--no-input", "--output-dir", str(out)], tmp_path, env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = out / "llm-service"
    assert (
        json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]["use_docker"]
        == "yes"
    )
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "baked")

    readme = repo / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text() + "\nUpdated by the template.\n")
    git(repo, "commit", "-q", "-am", "template change")
    assert run([cruft, "check"], project, env).returncode != 0, "cruft must see the update"
    result = run([cruft, "update", "--skip-apply-ask"], project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "README.md").read_text().endswith("Updated by the template.\n")
    assert run([cruft, "check"], project, env).returncode == 0
    assert (project / "compose.yaml").exists() and (project / "LICENSE").exists()


# --- gunicorn end to end ----------------------------------------------------------------------


def ledger_rows(db: Path, tenant: str) -> tuple[list[dict], list[int]]:
    """The tenant's budget rows and the estimates of its reservations, read from SQLite."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        budgets = [dict(r) for r in conn.execute("SELECT * FROM budgets")]
        estimates = [r[0] for r in conn.execute("SELECT amount FROM reservations")]
    return [b for b in budgets if f":{tenant}" in b["scope"]], estimates


@pytest.mark.slow
def test_gunicorn_workers_share_the_embedded_ledger_and_enforce_the_budget_exactly(
    bake: Baker, tmp_path: Path
) -> None:
    """Two gunicorn workers x two threads, one SQLite ledger: every affordable /chat call
    succeeds, every other one is a 402, and the ledger never overspends."""
    baked = bake(**DEFAULT)
    # The end-to-end no-overspend check must never skip silently: the route must exist.
    assert '"/chat"' in (baked / "src" / PACKAGE / "web" / "routes.py").read_text()
    project = fresh_copy(baked, tmp_path)
    db = tmp_path / "ledger.sqlite3"
    port = free_port()
    env = project_env(
        project,
        APP_ENV="development",
        LLM_PROVIDER="fake",
        CYCLES_LOCAL_DB=str(db),
        CYCLES_LOCAL_BUDGET_USD="0.01",
        CYCLES_JOURNAL_DIR=str(tmp_path / "journal"),
        # Every denial asks the ledger: the last call is refused by the ledger itself, not
        # by a cached denial from the burst (no sleeping until a cache window is over).
        CYCLES_DENY_CACHE_MS="0",
    )
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--threads", "2", "--access-logformat", "pid=%(p)s %(s)s %(U)s"],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    chat = {"prompt": "How much budget is left for this tenant today?", "max_tokens": 200}
    auth = {"Authorization": "Bearer dev-key-acme"}
    try:
        wait_until_serving(base, server, tmp_path / "gunicorn.log")

        # A burst across both workers, then one call at a time until the budget says no.
        with ThreadPoolExecutor(max_workers=8) as pool:
            calls = (
                pool.submit(http, "POST", base + "/chat", chat, auth, timeout=30) for _ in range(40)
            )
            burst = [call.result() for call in list(calls)]
        statuses = [status for status, _ in burst]
        for _ in range(60):
            status, body = http("POST", base + "/chat", chat, auth, timeout=30)
            statuses.append(status)
            if status == 402:
                break
        assert set(statuses) <= {200, 402}, statuses
        assert statuses[-1] == 402, "the budget must run out"
        for status, body in burst:
            assert status == 200 or body["error"] in {"budget_exceeded", "insufficient_budget"}
    finally:
        stop_group(server)
        log.close()

    pids = set(re.findall(r"pid=<?(\d+)>? \d+ /chat", (tmp_path / "gunicorn.log").read_text()))
    assert len(pids) == 2, "both workers must have served /chat"
    budgets, estimates = ledger_rows(db, "acme")
    assert len(budgets) == 1, budgets
    budget = budgets[0]
    successes = statuses.count(200)
    allocated, spent = budget["allocated"], budget["spent"]
    assert allocated == 1_000_000  # $0.01 in USD microcents
    assert (budget["reserved"], budget["debt"]) == (0, 0), "every reservation was settled"
    estimate = max(estimates)
    assert set(estimates) == {estimate}, "the same request reserves the same estimate"
    actual, remainder = divmod(spent, successes)
    assert remainder == 0 and 0 < actual <= estimate
    # Exactly the affordable number: each success needed the estimate to be available, and
    # the final refusal happened with less than the estimate left.
    assert successes == (allocated - estimate) // actual + 1
    assert allocated - spent < estimate


# --- one settings source: every entry point, from .env or from the environment --------------

REAL_CALLER_KEY = "real-caller-key-acme"
REAL_CALLER = {"Authorization": f"Bearer {REAL_CALLER_KEY}"}
DEV_CALLER = {"Authorization": "Bearer dev-key-acme"}  # accepted in development only
STARTUP_LINE = "llm-service: APP_ENV="
SOURCES = ("dotenv", "environment")


@contextmanager
def production_settings(project: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Cycles server (the embedded one, in its own process) provisioned for acme by the
    bootstrap command; yields the production settings an operator writes for it."""
    admin_key = "admin-secret"
    digest = hashlib.sha256(REAL_CALLER_KEY.encode()).hexdigest()
    with embedded_cycles(project, tmp_path, admin_key=admin_key) as url:
        keys_file = tmp_path / "cycles.env"
        env = project_env(
            project, APP_ENV="development", LLM_PROVIDER="fake", CYCLES_ADMIN_URL=url,
            CYCLES_ADMIN_API_KEY=admin_key, TENANT_API_KEYS=f"acme={digest}",
            CYCLES_JOURNAL_DIR=str(tmp_path / "provision-journal"), FLASK_SKIP_DOTENV="1",
        )  # fmt: skip
        command = [str(VENV_BIN / "flask"), "--app", PACKAGE, "cycles", "provision"]
        result = run([*command, "--keys-file", str(keys_file)], tmp_path, env)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = keys_file.read_text().splitlines()
        keys = {k: shlex.split(v)[0] for k, v in (line.split("=", 1) for line in lines)}
        yield {
            "APP_ENV": "production",
            "CYCLES_BASE_URL": url,
            **keys,
            "TENANT_API_KEYS": f"acme={digest}",
            "LLM_PROVIDER": "fake",
            "CYCLES_JOURNAL_DIR": str(tmp_path / "journal"),
            "WEB_CONCURRENCY": "2",  # gunicorn's own settings come from the same source
        }


def entry_point_command(entry_point: str, project: Path, port: int) -> tuple[list[str], Path]:
    """The command line of ``entry_point`` and the folder it runs in."""
    if entry_point == "flask":
        return [str(VENV_BIN / "flask"), "--app", PACKAGE, "run", "--port", str(port)], project
    if entry_point == "gunicorn":
        return [sys.executable, "-m", "gunicorn"], project
    if entry_point == "create_app":  # a generic WSGI server: the standard library's
        script = (
            "import sys; from wsgiref.simple_server import make_server;"
            f"from {PACKAGE} import create_app;"
            "make_server('127.0.0.1', int(sys.argv[1]), create_app()).serve_forever()"
        )
        return [sys.executable, "-c", script, str(port)], project
    # The Docker image: its CMD, in a folder laid out as its WORKDIR (gunicorn.conf.py only).
    workdir = project.parent / "image-workdir"
    workdir.mkdir(exist_ok=True)
    shutil.copy(project / "gunicorn.conf.py", workdir)
    steps = dockerfile_instructions(project)
    cmd = json.loads(next(arg for kind, arg in steps if kind == "CMD"))
    return [str(VENV_BIN / cmd[0]), *cmd[1:]], workdir


def start_entry_point(
    entry_point: str, project: Path, settings: Mapping[str, str], dotenv: Mapping[str, str]
) -> tuple[subprocess.Popen[str], str, Path]:
    port = free_port()
    command, cwd = entry_point_command(entry_point, project, port)
    if dotenv:
        (cwd / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    image = runtime_env(project) if entry_point == "docker" else {}
    # PORT: the image's 8000 may be taken on this machine; nothing else differs.
    env = project_env(project, **{**image, **settings, "PORT": str(port)})
    env.pop("FLASK_SKIP_DOTENV", None)
    log = project.parent / f"{entry_point}.log"
    server = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    return server, f"http://127.0.0.1:{port}", log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("entry_point", "source"),
    [
        *((entry, source) for entry in ("flask", "gunicorn", "create_app") for source in SOURCES),
        # The image holds no .env (.dockerignore): compose's env_file sets its environment
        # (test_compose_app_gets_every_setting_of_dotenv).
        ("docker", "environment"),
    ],
)
def test_every_entry_point_serves_production_from_either_settings_source(
    bake: Baker, tmp_path: Path, entry_point: str, source: str
) -> None:
    """The same production settings in ``.env`` (in the folder the server starts in) or in
    the environment: production, the development key refused, the real key served, and
    one start-up line (gunicorn: from the master, not from each of its two workers)."""
    project = fresh_copy(bake(**DEFAULT), tmp_path)
    with production_settings(project, tmp_path) as settings:
        in_dotenv = settings if source == "dotenv" else {}
        in_environment = settings if source == "environment" else {}
        server, base, log = start_entry_point(entry_point, project, in_environment, in_dotenv)
        try:
            wait_until_serving(base, server, log)
            if entry_point in {"gunicorn", "docker"}:
                wait_for_log(log, server, "Booting worker", count=2)
            statuses = [
                http("GET", base + "/budget", headers=DEV_CALLER)[0],
                http("GET", base + "/budget", headers=REAL_CALLER)[0],
            ]
            for _ in range(6):  # spread over the workers: each has built its app by now
                http("GET", base + "/healthz")
        finally:
            stop_group(server)
    output = log.read_text()
    assert statuses == [401, 200], output
    lines = [line for line in output.splitlines() if STARTUP_LINE in line]
    assert len(lines) == 1, output
    assert lines[0].endswith(
        f"{STARTUP_LINE}production, Cycles at {settings['CYCLES_BASE_URL']}, "
        "provider fake, model gpt-5.4-mini"
    ), lines


def wait_for_log(log: Path, server: subprocess.Popen[str], text: str, count: int) -> None:
    """Until ``text`` appears ``count`` times in the server's log (the server must live)."""
    for _ in range(600):
        if log.read_text().count(text) >= count:
            return
        assert server.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not seen {count} times: {log.read_text()}")


@pytest.mark.slow
def test_deployment_servers_never_fall_back_to_development(bake: Baker, tmp_path: Path) -> None:
    """gunicorn without APP_ENV refuses to start (even with every other setting in .env);
    the Docker image's command without settings refuses as production, not development."""
    project = fresh_copy(bake(**DEFAULT), tmp_path)
    dotenv = {"CYCLES_JOURNAL_DIR": str(tmp_path / "journal"), "LLM_PROVIDER": "fake"}
    outputs = {}
    for entry_point, in_dotenv in (("gunicorn", dotenv), ("docker", {})):
        server, _, log = start_entry_point(entry_point, project, {}, in_dotenv)
        try:
            assert server.wait(timeout=60) == 1, log.read_text()
        finally:
            if server.poll() is None:  # it started after all: never leave it running
                stop_group(server)
        outputs[entry_point] = log.read_text()
    refusal = "Error: APP_ENV is not set: a server for deployments does not fall back"
    assert refusal in outputs["gunicorn"], outputs["gunicorn"]
    refused = reported_problems(outputs["docker"])
    assert any(line.strip().startswith("CYCLES_BASE_URL") for line in refused), refused
    for output in outputs.values():
        assert "Traceback" not in output and STARTUP_LINE not in output
