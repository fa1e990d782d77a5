"""Tenants are isolated: one tenant can neither spend nor read another's budget."""

from __future__ import annotations

from flask.testing import FlaskClient

from conftest import Provisioner, assert_error, auth_headers, budget_scope

BODY = {"prompt": "Hello there", "max_tokens": 16}


def test_one_tenant_running_out_leaves_the_other_serving(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    provisioner.set_budget("acme", allocated=0)
    denied = client.post("/chat", json=BODY, headers=auth_headers("acme"))
    assert_error(denied, 402, "budget_exceeded")
    served = client.post("/chat", json=BODY, headers=auth_headers("globex"))
    assert served.status_code == 200, served.get_json()


def test_spending_touches_only_the_callers_budget(
    client: FlaskClient, provisioner: Provisioner
) -> None:
    before = provisioner.balance("globex")
    for _ in range(2):
        assert client.post("/chat", json=BODY, headers=auth_headers("acme")).status_code == 200
    assert provisioner.balance("globex") == before
    assert provisioner.balance("acme")["reserved"] == 0


def test_a_tenant_sees_only_its_own_balances(client: FlaskClient) -> None:
    own = client.get("/budget", headers=auth_headers("acme"))
    assert own.status_code == 200
    body = own.get_json()
    assert body["tenant"] == "acme"
    assert [b["scope"] for b in body["balances"]] == [budget_scope("acme")]
    same = client.get("/budget?tenant=acme", headers=auth_headers("acme"))
    assert same.get_json() == body

    other = client.get("/budget?tenant=globex", headers=auth_headers("acme"))
    assert_error(other, 403, "forbidden")
    assert "globex" not in other.get_data(as_text=True)
