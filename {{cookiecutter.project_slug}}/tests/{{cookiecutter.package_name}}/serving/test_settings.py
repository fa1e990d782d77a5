"""gunicorn's own settings: defaults, and one line naming each bad value."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.serving import settings
from {{ cookiecutter.package_name }}.serving.settings import ServingSettingsError, read


def problems_of(**env: str) -> list[str]:
    with pytest.raises(ServingSettingsError) as caught:
        read(env, cpu_count=2)
    return list(caught.value.problems)


def test_the_defaults() -> None:
    served = read({}, cpu_count=8)
    assert served.bind == ["127.0.0.1:8000"]
    assert served.worker_class == "gevent"
    assert (served.workers, served.threads, served.worker_connections) == (4, 8, 1000)
    assert (served.header_timeout, served.body_timeout) == (10, 30)
    # LLM_TIMEOUT 30 s + 2 x CYCLES_READ_TIMEOUT 5 s + 15 s; a stuck stream 1.5 x 30 + 2 + 5 + 5
    assert (served.timeout, served.graceful_timeout) == (55, 57)


def test_workers_default_to_the_cpus_at_most_four() -> None:
    assert [read({}, cpu_count=n).workers for n in (None, 1, 3, 16)] == [1, 1, 3, 4]


def test_each_setting_is_read() -> None:
    served = read(
        {
            "GUNICORN_BIND": "0.0.0.0",
            "PORT": "9001",
            "GUNICORN_WORKER_CLASS": "GThread",
            "WEB_CONCURRENCY": "3",
            "GUNICORN_THREADS": "16",
            "GUNICORN_WORKER_CONNECTIONS": "200",
            "GUNICORN_HEADER_TIMEOUT": "2.5",
            "GUNICORN_BODY_TIMEOUT": "60",
            "LLM_TIMEOUT": "100",
            "CYCLES_READ_TIMEOUT": "10",
        },
        cpu_count=2,
    )
    assert served.bind == ["0.0.0.0:9001"]
    assert served.worker_class == "gthread"
    assert (served.workers, served.threads, served.worker_connections) == (3, 16, 200)
    assert (served.header_timeout, served.body_timeout) == (2.5, 60)
    assert served.timeout == 100 + 2 * 10 + 15


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        (
            "GUNICORN_THREADS",
            "1e999",
            "GUNICORN_THREADS='1e999' is invalid: expected a whole number",
        ),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS=0 is out of range: expected 1..1024"),
        ("WEB_CONCURRENCY", "inf", "WEB_CONCURRENCY='inf' is invalid: expected a whole number"),
        ("WEB_CONCURRENCY", "2.5", "WEB_CONCURRENCY='2.5' is invalid: expected a whole number"),
        ("PORT", "70000", "PORT=70000 is out of range: expected 0..65535"),
        (
            "GUNICORN_BIND",
            "10.0.0.5:http",
            "GUNICORN_BIND='10.0.0.5:http' is invalid: expected host, host:port or unix:path",
        ),
        (
            "GUNICORN_WORKER_CONNECTIONS",
            "nan",
            "GUNICORN_WORKER_CONNECTIONS='nan' is invalid: expected a whole number",
        ),
        (
            "GUNICORN_WORKER_CLASS",
            "sync",
            "GUNICORN_WORKER_CLASS='sync' is invalid: expected gevent or gthread",
        ),
        (
            "GUNICORN_HEADER_TIMEOUT",
            "nan",
            "GUNICORN_HEADER_TIMEOUT='nan' is out of range: expected 0.1..3600",
        ),
        (
            "GUNICORN_BODY_TIMEOUT",
            "-inf",
            "GUNICORN_BODY_TIMEOUT='-inf' is out of range: expected 0.1..3600",
        ),
        (
            "GUNICORN_BODY_TIMEOUT",
            "soon",
            "GUNICORN_BODY_TIMEOUT='soon' is invalid: expected a number",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(name: str, value: str, problem: str) -> None:
    assert problems_of(**{name: value}) == [problem]


def test_every_problem_is_reported_at_once() -> None:
    error_lines = str(
        ServingSettingsError(problems_of(GUNICORN_THREADS="x", WEB_CONCURRENCY="inf"))
    ).splitlines()
    assert error_lines[0] == "2 configuration problems:"
    assert [line.split("=")[0].strip() for line in error_lines[1:]] == [
        "WEB_CONCURRENCY",
        "GUNICORN_THREADS",
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "-5", "soon"])
@pytest.mark.parametrize("name", ["LLM_TIMEOUT", "CYCLES_READ_TIMEOUT", "STREAM_WRITE_TIMEOUT"])
def test_the_apps_own_timeouts_fall_back_here_for_the_app_to_report(name: str, value: str) -> None:
    """The app refuses them with its own line (gunicorn.conf.py's check); here they only
    must not crash the arithmetic of gunicorn's timeouts."""
    served = read({name: value}, cpu_count=2)
    assert (served.timeout, served.graceful_timeout) == (55, 57)


@pytest.mark.parametrize(
    ("addresses", "bind"),
    [
        ("127.0.0.1", ["127.0.0.1:8000"]),
        ("[::]", ["[::]:8000"]),
        ("10.0.0.5:7000, unix:/run/a", ["10.0.0.5:7000", "unix:/run/a"]),
    ],
)
def test_bind_addresses_add_the_port_to_bare_hosts(addresses: str, bind: list[str]) -> None:
    assert settings.bind_addresses(addresses, 8000) == bind
