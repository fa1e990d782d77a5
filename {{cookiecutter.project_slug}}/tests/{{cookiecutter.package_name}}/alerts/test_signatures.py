"""Webhook signatures: the Cycles scheme, verified in constant time."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from {{ cookiecutter.package_name }}.alerts import signatures
from {{ cookiecutter.package_name }}.alerts.signatures import new_secret, sign, verify


def test_a_signature_is_sha256_hmac_hex_of_the_raw_body() -> None:
    expected = hmac.new(b"k" * 20, b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign("k" * 20, b'{"a":1}') == f"sha256={expected}"


@pytest.mark.parametrize(
    "signature", [None, "", "sha256=00", sign("other-secret-value", b"body"), sign("k", b"body!")]
)
def test_anything_but_the_bodys_signature_fails(signature: str | None) -> None:
    assert not verify("k", b"body", signature)
    assert verify("k", b"body", sign("k", b"body"))


def test_verification_goes_through_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    assert verify("k", b"x", sign("k", b"x")) and compared == [sign("k", b"x").encode()]


def test_new_secrets_are_random_and_long() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and first.startswith("whsec_") and len(first) >= 40
