"""Caps where Cycles reads them: on the budget of the subject's own scope.

The reference server takes caps from the deepest scope of a reservation's subject only (for
the app, the ``app:`` scope under the caller's budget), never from a parent scope; the
embedded server does the same (tests/localcycles/ledger/test_lifecycle_caps_scope.py).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from conftest import UNIT, Provisioner
from {{ cookiecutter.package_name }}.budget.service import budget_service


def cap_calls(app: Flask, provisioner: Provisioner, tenant: str, caps: dict[str, Any]) -> None:
    """Give the scope of ``tenant``'s calls a budget carrying ``caps`` (and $100)."""
    subject = budget_service(app).cycles.subject_body(tenant)
    scope = "/".join(f"{level}:{value.lower()}" for level, value in subject.items())
    provisioner.ledger.set_budget(scope, UNIT, allocated=10**10, caps=caps)
