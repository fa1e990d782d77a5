"""The settings read section by section: every section's problems reported together, in order."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from flask.cli import FlaskGroup

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import LOCAL_CYCLES
from {{ cookiecutter.package_name }}.config_callers import NAME as CALLERS_SETTING
from {{ cookiecutter.package_name }}.config_reader import read_observability, read_settings
from {{ cookiecutter.package_name }}.config_values import ValueReader
from support.config_kit import SERVER, load, problems

# One bad value in each section, in the order the sections are read.
ONE_BAD_VALUE_PER_SECTION = {
    "APP_ENV": "staging",  # where the app runs
    "CYCLES_TENANT": "Not Valid",  # who calls, and the Cycles credentials
    "LLM_PROVIDER": "mystery",  # the language model
    "MAX_PROMPT_CHARS": "0",  # what one request may ask for
    "CYCLES_LOCAL_PORT": "-1",  # the embedded ledger
    "CYCLES_MODE": "audit",  # how the app calls Cycles
    "CYCLES_KEY_TTL_DAYS": "0",  # runtime keys' lifetimes
    "LOG_FORMAT": "xml",  # observability
}


def test_each_section_reports_its_problems_in_the_order_sections_are_read() -> None:
    found = problems(**ONE_BAD_VALUE_PER_SECTION)
    named = [problem.split("=")[0].split(":")[0] for problem in found]
    assert named == list(ONE_BAD_VALUE_PER_SECTION)


def test_the_instance_folder_holds_the_ledger_and_journal_unless_told(tmp_path: Path) -> None:
    settings = read_settings({}, tmp_path)
    assert settings.instance_path == tmp_path
    assert settings.cycles_local_db == tmp_path / "cycles-ledger.sqlite3"
    assert settings.cycles_journal_dir == tmp_path / "cycles-commit-journal"
    told = {"CYCLES_LOCAL_DB": "/d/ledger.db", "CYCLES_JOURNAL_DIR": "/d/journal"}
    settings = read_settings(told, tmp_path)
    assert settings.cycles_local_db == Path("/d/ledger.db")
    assert settings.cycles_journal_dir == Path("/d/journal")


def test_development_defaults_serve_the_embedded_ledger_only() -> None:
    assert load().cycles_base_url == LOCAL_CYCLES
    assert load().tenants  # development callers, without any setting
    for env in ({"CYCLES_BASE_URL": SERVER}, {"APP_ENV": "production"}):
        found = problems(**env)
        assert any(p.startswith(f"{CALLERS_SETTING} is required") for p in found), found


def test_only_a_server_asks_for_cycles_credentials() -> None:
    server_only = " is required when CYCLES_BASE_URL is a server"
    assert not any(server_only in p for p in problems(APP_ENV="production"))
    assert any(server_only in p for p in problems(CYCLES_BASE_URL=SERVER))


def test_production_defaults_to_json_log_lines() -> None:
    assert read_observability(ValueReader({}), production=True)["log_format"] == "json"
    assert read_observability(ValueReader({}), production=False)["log_format"] == "text"
    assert load(LOG_FORMAT="JSON").log_format == "json"


def test_the_topup_message_is_one_printable_line_or_the_default() -> None:
    assert load().budget_topup_message is None  # the default names the operator's command
    hint = "Upgrade at https://example.com/billing"
    assert load(BUDGET_TOPUP_MESSAGE=f"  {hint} ").budget_topup_message == hint
    for bad in ("two\nlines", "x" * 501):
        (found,) = problems(BUDGET_TOPUP_MESSAGE=bad)
        assert found.startswith("BUDGET_TOPUP_MESSAGE must be one line")


def test_the_topup_message_may_fill_its_500_characters_but_not_pass_them() -> None:
    # The README promises callers' 402s may carry up to 500 characters of it.
    at_limit = "x" * 500
    assert load(BUDGET_TOPUP_MESSAGE=at_limit).budget_topup_message == at_limit
    over = "y" * 501
    (found,) = problems(BUDGET_TOPUP_MESSAGE=over)
    assert found.startswith("BUDGET_TOPUP_MESSAGE must be one line of at most 500 ")


def test_an_over_long_topup_message_stops_start_up_with_one_line() -> None:
    """A pasted page of text is a one-line error at start-up, never quoted back whole."""
    pasted = "Buy more credit. " * 40  # 680 characters
    cli = FlaskGroup(
        create_app=lambda: create_app({"APP_ENV": "testing", "BUDGET_TOPUP_MESSAGE": pasted})
    )
    result = CliRunner().invoke(cli, ["routes"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: BUDGET_TOPUP_MESSAGE must be one line")
    assert "Buy more credit" not in line
