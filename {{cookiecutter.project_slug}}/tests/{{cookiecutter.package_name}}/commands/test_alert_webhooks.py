"""`flask cycles provision` subscribes the receiver, or says why it did not."""

from __future__ import annotations

from pathlib import Path

from test_cycles import ADMIN_KEY, invoke, make_app

from {{ cookiecutter.package_name }}.commands.alert_webhooks import subscribe_receiver
from {{ cookiecutter.package_name }}.cycles.admin_api import Endpoint
from localcycles import LocalCyclesServer


def test_provision_subscribes_the_receiver_with_the_thresholds(tmp_path: Path) -> None:
    with LocalCyclesServer(str(tmp_path / "l.sqlite3"), admin_key=ADMIN_KEY) as server:
        app = make_app(
            server.base_url, tmp_path,
            CYCLES_WEBHOOK_URL="http://127.0.0.1:9/webhooks/cycles",
            CYCLES_WEBHOOK_SECRET="s" * 32, BUDGET_ALERT_THRESHOLDS="0.5,1.0",
        )  # fmt: skip
        result = invoke(app, "cycles", "provision", "--keys-file", str(tmp_path / "k.env"))
        assert result.exit_code == 0, result.output
        subs = server.webhooks.subscriptions()
    assert "alerts webhook of" in result.output
    assert subs and {s.url for s in subs} == {"http://127.0.0.1:9/webhooks/cycles"}
    assert all(s.thresholds == (0.5, 1.0) and s.secret == "s" * 32 for s in subs)


def test_without_a_receiver_url_provision_says_it_skipped(tmp_path: Path) -> None:
    with LocalCyclesServer(str(tmp_path / "l.sqlite3"), admin_key=ADMIN_KEY) as server:
        app = make_app(server.base_url, tmp_path)
        with app.app_context():
            admin = Endpoint(server.base_url, {"X-Admin-API-Key": ADMIN_KEY})
            runner = app.test_cli_runner()
            result = runner.invoke(args=["cycles", "provision", "--keys-file", str(tmp_path / "k")])
            subscribe_receiver(app, admin, ["acme"])
        assert server.webhooks.subscriptions() == []
    assert "alerts webhook: skipped (CYCLES_WEBHOOK_URL is not set)" in result.output
