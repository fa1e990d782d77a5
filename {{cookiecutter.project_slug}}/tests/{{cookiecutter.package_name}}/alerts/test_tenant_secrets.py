"""Tenants' alert secrets: derived from BUDGET_ALERT_SIGNING_KEY (nothing to steal from the
alerts file), stored as they are without it, never signed with a key they did not come from."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.alerts.signatures import SECRET_PREFIX
from {{ cookiecutter.package_name }}.alerts.tenant_secrets import TenantSecrets

KEY = "k" * 43
OTHER_KEY = "o" * 43


def test_with_a_key_the_store_keeps_no_secret_and_signing_derives_the_one_shown() -> None:
    secrets = TenantSecrets(KEY)
    shown, kept = secrets.issue("acme")
    assert shown.startswith(SECRET_PREFIX) and len(shown) > 40
    assert shown not in kept and shown[len(SECRET_PREFIX) :] not in kept
    assert secrets.signing_secret("acme", kept) == shown
    # A restarted app (a new object, the same key) derives the same secret.
    assert TenantSecrets(KEY).signing_secret("acme", kept) == shown


def test_each_issue_is_a_new_secret_and_tied_to_its_tenant() -> None:
    secrets = TenantSecrets(KEY)
    first, kept = secrets.issue("acme")
    second, _ = secrets.issue("acme")
    assert first != second  # a PUT again replaces a leaked secret
    # The stored value copied to another tenant's row does not give that tenant this secret.
    assert secrets.signing_secret("globex", kept) != first


def test_a_secret_from_another_key_or_none_is_never_signed_with() -> None:
    _, kept = TenantSecrets(KEY).issue("acme")
    assert TenantSecrets(OTHER_KEY).signing_secret("acme", kept) is None
    assert TenantSecrets(None).signing_secret("acme", kept) is None


def test_without_a_key_the_secret_is_stored_and_still_works_once_a_key_is_set() -> None:
    shown, kept = TenantSecrets(None).issue("acme")
    assert kept == shown and shown.startswith(SECRET_PREFIX)
    assert TenantSecrets(None).signing_secret("acme", kept) == shown
    assert TenantSecrets(KEY).signing_secret("acme", kept) == shown
