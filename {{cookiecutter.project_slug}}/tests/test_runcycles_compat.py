"""Fails loudly when runcycles no longer has what runcycles_compat.py reaches past its API for.

If this fails after a runcycles upgrade: read the new runcycles.retry, adapt
runcycles_compat.py, and add the version to TESTED_RUNCYCLES_VERSIONS.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from runcycles import CyclesClient
from runcycles.retry import CommitRetryEngine

from {{ cookiecutter.package_name }}.runcycles_compat import TESTED_RUNCYCLES_VERSIONS


def test_the_installed_runcycles_is_a_tested_version() -> None:
    assert version("runcycles") in TESTED_RUNCYCLES_VERSIONS, (
        f"runcycles {version('runcycles')} is not among the versions runcycles_compat.py "
        f"was tested with ({', '.join(TESTED_RUNCYCLES_VERSIONS)})"
    )


def test_the_retry_engine_still_has_the_methods_the_guard_uses() -> None:
    expected = {
        "set_client": ["self", "client"],
        "schedule": [
            "self",
            "reservation_id",
            "commit_body",
            "event_fallback_body",
            "retry_after_ms",
        ],
        "schedule_event": ["self", "reservation_id", "event_body"],
        "flush": ["self", "timeout"],
    }
    for name, parameters in expected.items():
        method = getattr(CommitRetryEngine, name)
        assert list(inspect.signature(method).parameters) == parameters, name
    init = inspect.signature(CommitRetryEngine.__init__)
    assert list(init.parameters) == ["self", "config"]


def test_the_retry_engine_calls_only_what_the_closing_wrapper_answers() -> None:
    # runcycles_compat hands the engine a wrapper with just these two calls.
    import re

    import runcycles.retry

    called = set(re.findall(r"self\._client\.(\w+)\(", inspect.getsource(runcycles.retry)))
    assert called <= {"commit_reservation", "create_event"}, called


def test_the_client_still_sends_through_the_transport_the_compat_module_swaps() -> None:
    # use_plain_http replaces CyclesClient._http; runcycles must still send through it so.
    source = inspect.getsource(CyclesClient)
    assert "self._http = httpx.Client(" in source
    assert "self._http.post(path, json=data, headers=headers)" in source
    assert "self._http.get(path, params=params)" in source
    assert "self._http.close()" in source
