"""Command-line arguments: a bad tenant id or amount is a usage error naming the rule."""

from __future__ import annotations

import click
import pytest

from {{ cookiecutter.package_name }}.commands.arguments import check_tenant_id, dollars


def test_tenant_ids_follow_the_apps_rule() -> None:
    assert check_tenant_id("acme-2") == "acme-2"
    with pytest.raises(click.BadParameter, match=r"'Bad Tenant': expected"):
        check_tenant_id("Bad Tenant")


def test_amounts_are_dollars_in_microcents() -> None:
    assert dollars("1.50") == 150_000_000
    assert dollars("0") == 0
    with pytest.raises(click.BadParameter, match=r"more than \$0"):
        dollars("0", positive=True)
    with pytest.raises(click.BadParameter):
        dollars("ten")
