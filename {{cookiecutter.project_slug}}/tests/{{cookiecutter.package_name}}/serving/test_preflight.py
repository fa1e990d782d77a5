"""The app's settings, checked for gunicorn's master in a process of its own."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import settings_source
from {{ cookiecutter.package_name }}.serving import preflight

READ_PREFIXES = ("APP_", "CYCLES_", "LLM_", "TENANT", "GUNICORN_", "MAX_", "DEFAULT_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(READ_PREFIXES) or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLASK_SKIP_DOTENV", "1")
    monkeypatch.setenv("CYCLES_JOURNAL_DIR", str(tmp_path / "journal"))


@pytest.fixture
def settings_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger(settings_source.__name__)
    filters = list(logger.filters)
    yield logger
    logger.filters[:] = filters


def test_every_problem_of_the_apps_settings_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "testing")
    monkeypatch.setenv("CYCLES_MODE", "audit")
    monkeypatch.setenv("LLM_TIMEOUT", "nan")
    outcome = preflight.check()
    assert outcome.startup_line is None
    assert [problem.split("=")[0] for problem in outcome.problems] == ["CYCLES_MODE", "LLM_TIMEOUT"]


def test_app_env_must_be_set() -> None:
    assert preflight.check().problems == [settings_source.APP_ENV_REQUIRED]


def test_valid_settings_give_the_start_up_line_it_logged(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_ENV", "testing")
    outcome = preflight.check()
    assert outcome.problems == []
    assert outcome.startup_line is not None
    assert outcome.startup_line.startswith(f"{settings_source.SERVICE}: APP_ENV=testing")
    assert capfd.readouterr().err.splitlines() == [outcome.startup_line]


def test_a_check_that_crashes_is_one_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "__name__", "no_such_module_here")
    (problem,) = preflight.check().problems
    assert problem == "the check of the app's settings failed (exit 1)"


def test_a_worker_does_not_repeat_the_masters_start_up_line(
    settings_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=settings_log.name)
    preflight.quiet_startup_line("service: the line")
    settings_log.info("%s", "service: the line")
    settings_log.info("%s", "another line")
    assert [r.getMessage() for r in caplog.records if r.name == settings_log.name] == [
        "another line"
    ]
