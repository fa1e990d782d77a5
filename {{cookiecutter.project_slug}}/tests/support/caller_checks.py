"""Checks of how the app answers callers, shared by the test files of each answer."""

from __future__ import annotations

from flask.testing import FlaskClient

from conftest import assert_error


def assert_refused_everywhere(client: FlaskClient, headers: dict[str, str]) -> None:
    """Every route that serves a tenant answers ``headers`` with 401 ``unauthorized``."""
    for response in (
        client.post("/chat", json={"prompt": "hello"}, headers=headers),
        client.post("/summarize", json={"text": "t"}, headers=headers),
        client.get("/budget", headers=headers),
    ):
        assert_error(response, 401, "unauthorized")
