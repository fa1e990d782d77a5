"""The HTTP API: health, budget-guarded LLM routes and the caller's budget."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process serves requests (it does not call Cycles or the LLM)."""
    return jsonify(status="ok")
