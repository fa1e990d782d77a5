"""Scopes: a subject's canonical scope paths, and operator-supplied scopes checked."""

from __future__ import annotations

import pytest

from localcycles.protocol.scopes import derive_scopes, has_segment, leaf, normalize_scope


def test_every_prefix_of_the_path_in_canonical_order_lower_cased() -> None:
    subject = {"agent": "Bot", "tenant": "Acme", "app": "chat", "workspace": ""}
    assert derive_scopes(subject) == [
        "tenant:acme",
        "tenant:acme/app:chat",
        "tenant:acme/app:chat/agent:bot",
    ]


def test_a_subject_without_levels_has_no_scopes() -> None:
    assert derive_scopes({"dimensions": "x", "tenant": None}) == []


def test_leaf_is_the_last_segment() -> None:
    assert leaf("tenant:acme/app:chat") == "app:chat"
    assert leaf("tenant:acme") == "tenant:acme"


def test_has_segment_matches_whole_segments_only() -> None:
    assert has_segment("tenant:acme/app:chat", "tenant:acme")
    assert has_segment("tenant:acme/app:chat", "app:chat")
    assert not has_segment("tenant:acme-corp/app:chat", "tenant:acme")
    assert not has_segment("tenant:acme/app:chatter", "app:chat")


def test_an_operator_scope_is_lower_cased() -> None:
    assert normalize_scope("Tenant:ACME/Workspace:Dev") == "tenant:acme/workspace:dev"


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ("workspace:dev", "must start with tenant"),
        ("tenant:acme/app:x/workspace:y", "must follow tenant>workspace"),
        ("tenant:acme/tenant:other", "must follow tenant>workspace"),
        ("tenant:a:b", "malformed scope segment"),
        ("tenant:", "malformed scope segment"),
        ("tenant:acme/planet:earth", "malformed scope segment"),
        ("tenant:acme/", "malformed scope segment"),
    ],
)
def test_a_malformed_operator_scope_is_refused(scope: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        normalize_scope(scope)
