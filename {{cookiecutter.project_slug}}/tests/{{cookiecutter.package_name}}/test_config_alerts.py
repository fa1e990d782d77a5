"""Budget alert settings: thresholds validated, the receiver's URL needs its secret."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.config_alerts import AlertFields, read_alerts
from {{ cookiecutter.package_name }}.config_values import ValueReader
from support.config_kit import SERVER, load

URL = "https://app.example.com/webhooks/cycles"


def read(app_env: str = "testing", **env: str) -> tuple[AlertFields, list[str]]:
    reader = ValueReader(env)
    return read_alerts(reader, app_env), reader.problems


def test_defaults_are_80_95_and_100_percent_without_a_receiver() -> None:
    fields, found = read()
    assert found == []
    assert fields["budget_alert_thresholds"] == (0.8, 0.95, 1.0)
    assert fields["cycles_webhook_url"] is None and fields["cycles_webhook_secret"] is None


def test_thresholds_and_the_receiver_are_read() -> None:
    fields, found = read(
        BUDGET_ALERT_THRESHOLDS="0.5, 0.9", CYCLES_WEBHOOK_URL=URL, CYCLES_WEBHOOK_SECRET="s" * 32
    )
    assert found == []
    assert fields["budget_alert_thresholds"] == (0.5, 0.9)
    assert fields["cycles_webhook_url"] == URL and fields["cycles_webhook_secret"] == "s" * 32


@pytest.mark.parametrize("value", ["0.8,abc", "0,0.5", "0.9,0.8", "0.8,0.8", "1.5", "nan", ","])
def test_bad_thresholds_are_one_line_naming_the_setting(value: str) -> None:
    fields, found = read(BUDGET_ALERT_THRESHOLDS=value)
    assert len(found) == 1 and found[0].startswith("BUDGET_ALERT_THRESHOLDS=")
    assert fields["budget_alert_thresholds"] == (0.8, 0.95, 1.0)


def test_the_receiver_url_needs_a_long_enough_secret() -> None:
    assert read(CYCLES_WEBHOOK_URL=URL)[1] == [
        "CYCLES_WEBHOOK_SECRET is required when CYCLES_WEBHOOK_URL is set (the receiver "
        "verifies every event with it)"
    ]
    (short,) = read(CYCLES_WEBHOOK_URL=URL, CYCLES_WEBHOOK_SECRET="tiny-secret")[1]
    assert short.startswith("CYCLES_WEBHOOK_SECRET is too short") and "tiny" not in short
    (bad,) = read(CYCLES_WEBHOOK_URL="ftp://x", CYCLES_WEBHOOK_SECRET="s" * 32)[1]
    assert bad.startswith("CYCLES_WEBHOOK_URL")


def test_the_app_reads_them_from_its_settings() -> None:
    with pytest.raises(Exception, match="BUDGET_ALERT_THRESHOLDS"):
        load(APP_ENV="testing", CYCLES_BASE_URL=SERVER, BUDGET_ALERT_THRESHOLDS="2")


def test_internal_alert_urls_are_off_in_production_and_loopback_elsewhere() -> None:
    assert read("production")[0]["budget_webhook_allow_networks"] == ()
    for app_env in ("development", "testing"):
        nets = read(app_env)[0]["budget_webhook_allow_networks"]
        assert [str(net) for net in nets] == ["127.0.0.0/8", "::1/128"]
    fields, found = read("production", BUDGET_WEBHOOK_ALLOW_NETWORKS="10.1.0.0/16, fd00::/8")
    assert found == []
    assert [str(net) for net in fields["budget_webhook_allow_networks"]] == [
        "10.1.0.0/16", "fd00::/8"
    ]  # fmt: skip
    assert read(BUDGET_WEBHOOK_ALLOW_NETWORKS="none")[0]["budget_webhook_allow_networks"] == ()


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.1/8", "127.0.0.1,,"])
def test_a_bad_allow_list_is_one_line_naming_the_setting(value: str) -> None:
    fields, found = read(BUDGET_WEBHOOK_ALLOW_NETWORKS=value)
    assert len(found) == 1 and found[0].startswith("BUDGET_WEBHOOK_ALLOW_NETWORKS=")
    assert fields["budget_webhook_allow_networks"] == ()


def test_queued_forwards_resume_at_start_except_in_tests() -> None:
    assert read("testing")[0]["budget_alerts_resume"] is False
    assert read("development")[0]["budget_alerts_resume"] is True
    assert read("production")[0]["budget_alerts_resume"] is True
    assert read("testing", BUDGET_ALERTS_RESUME="true")[0]["budget_alerts_resume"] is True


def test_the_alert_signing_key_is_read_and_a_short_one_refused_without_echoing_it() -> None:
    key = "k" * 43
    fields, found = read(BUDGET_ALERT_SIGNING_KEY=key)
    assert found == [] and fields["budget_alert_signing_key"] == key
    assert read()[0]["budget_alert_signing_key"] is None
    (short,) = read(BUDGET_ALERT_SIGNING_KEY="short-signing-key")[1]
    assert short.startswith("BUDGET_ALERT_SIGNING_KEY is too short: expected at least 32")
    assert "short-signing-key" not in short
