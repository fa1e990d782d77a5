"""Tenant ids that share a prefix (acme, acme-corp) never see or spend each other's budget."""

from __future__ import annotations

from pathlib import Path

from conftest import Provisioner, app_env, assert_error, auth_headers, budget_scope
from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cycles.clients import close
from localcycles import LocalCyclesServer

TENANTS = ("acme", "acme-corp")
PROMPT = "Which budget am I spending?"
MAX_TOKENS = 16


def test_prefix_sharing_tenants_spend_and_see_only_their_own_scope(
    cycles_server: LocalCyclesServer,
    tmp_path: Path,
) -> None:
    provisioner = Provisioner(cycles_server.ledger)
    for tenant in TENANTS:
        provisioner.tenant(tenant)
    app = create_app(app_env(cycles_server.base_url, tmp_path, tenants=TENANTS))
    try:
        client = app.test_client()
        body = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
        response = client.post("/chat", json=body, headers=auth_headers("acme-corp"))
        assert response.status_code == 200, response.get_json()
        charged = response.get_json()["cost_usd_microcents"]
        assert charged > 0
        assert provisioner.balance("acme-corp")["spent"] == charged
        assert provisioner.balance("acme")["spent"] == 0

        for tenant in TENANTS:
            shown = client.get("/budget", headers=auth_headers(tenant)).get_json()
            assert [row["scope"] for row in shown["balances"]] == [budget_scope(tenant)]
        other = client.get("/budget?tenant=acme-corp", headers=auth_headers("acme"))
        assert_error(other, 403, "forbidden")

        # Spending acme down to nothing leaves acme-corp untouched, and the other way round.
        provisioner.set_budget("acme", allocated=1)
        denied = client.post("/chat", json=body, headers=auth_headers("acme"))
        assert_error(denied, 402, "budget_exceeded")
        again = client.post("/chat", json=body, headers=auth_headers("acme-corp"))
        assert again.status_code == 200
    finally:
        close(app)
