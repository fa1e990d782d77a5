"""Fails loudly when runcycles no longer has what runcycles_compat.py reaches past its API for.

If this fails after a runcycles upgrade: read the new runcycles client, adapt
runcycles_compat.py, and add the version to TESTED_RUNCYCLES_VERSIONS.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import httpcore
import httpx
import pytest
from runcycles import CyclesClient

from {{ cookiecutter.package_name }}.cycles.runcycles_compat import TESTED_RUNCYCLES_VERSIONS
from {{ cookiecutter.package_name }}.cycles.transport import bound_httpx


def test_the_installed_runcycles_is_a_tested_version() -> None:
    assert version("runcycles") in TESTED_RUNCYCLES_VERSIONS, (
        f"runcycles {version('runcycles')} is not among the versions runcycles_compat.py "
        f"was tested with ({', '.join(TESTED_RUNCYCLES_VERSIONS)})"
    )


def test_the_client_still_sends_through_the_transport_the_compat_module_swaps() -> None:
    # install_transport replaces CyclesClient._http; runcycles must still send through it so.
    source = inspect.getsource(CyclesClient)
    assert "self._http = httpx.Client(" in source
    assert "self._http.post(path, json=data, headers=headers)" in source
    assert "self._http.get(path, params=params)" in source
    assert "self._http.close()" in source


def test_httpx_pools_still_take_the_network_backend_that_bounds_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # cycles_transport.bound_httpx wraps the httpcore backend of every pool of runcycles'
    # httpx client (direct and proxied); if httpx moves it, calls would go unbounded.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with httpx.Client() as http:
        bounded = bound_httpx(http, total_s=1)
        transports = [http._transport, *(t for t in http._mounts.values() if t is not None)]
        assert len(transports) == 2  # the direct one and the proxy's
        for transport in transports:
            pool = transport._pool  # type: ignore[attr-defined]
            assert isinstance(pool, httpcore.ConnectionPool)
            assert type(pool._network_backend).__name__ == "_BoundedBackend"
        assert bounded.http is http
