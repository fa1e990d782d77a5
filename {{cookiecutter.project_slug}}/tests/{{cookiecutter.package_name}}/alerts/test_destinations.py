"""Tenants' alert URLs: no internal hosts (literal or by DNS), no credentials, bounded."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.alerts.destinations import (
    LOOPBACK,
    MAX_URL_CHARS,
    Destinations,
    UnsafeUrl,
)

PUBLIC = "93.184.215.14"  # a global address (no DNS needed)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://127.8.9.10:8080/h",
        "http://10.1.2.3/h",
        "http://172.16.0.1/h",
        "http://192.168.1.1/h",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/h",
        "http://0.0.0.0/h",
        "http://[::1]/h",
        "http://[::]/h",
        "http://[fd00::1]/h",
        "http://[fe80::1]/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://[::ffff:169.254.169.254]/h",
        "http://localhost:5000/h",  # a name resolving to loopback (the hosts file)
    ],
)
def test_internal_hosts_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="internal address"):
        Destinations().check(url)


def test_loopback_only_when_allowed() -> None:
    local = Destinations(LOOPBACK)
    assert local.check("http://127.0.0.1:9/h").url == "http://127.0.0.1:9/h"
    assert local.check("http://[::1]:9/h").url == "http://[::1]:9/h"
    with pytest.raises(UnsafeUrl):
        local.check("http://10.0.0.1/h")
    with pytest.raises(UnsafeUrl):
        local.check("http://169.254.169.254/h")


def test_a_public_address_is_taken() -> None:
    target = Destinations().check(f"https://{PUBLIC}/hooks/budget")
    assert (target.url, target.host) == (f"https://{PUBLIC}:443/hooks/budget", PUBLIC)


def test_a_name_is_pinned_to_its_checked_address() -> None:
    dns = Destinations(resolver=lambda host, port: [PUBLIC])
    target = dns.check("https://hooks.tenant.example/b")
    assert target.url == f"https://{PUBLIC}:443/b"
    assert (target.host, target.server_name) == ("hooks.tenant.example", "hooks.tenant.example")


def test_a_name_with_any_internal_address_is_refused() -> None:
    dns = Destinations(resolver=lambda host, port: [PUBLIC, "10.0.0.7"])
    with pytest.raises(UnsafeUrl, match=r"hooks.tenant.example \(10.0.0.7\)"):
        dns.check("https://hooks.tenant.example/b")


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        Destinations(resolver=lambda host, port: []).check("https://nowhere.example/b")


@pytest.mark.parametrize(
    "url", [f"https://user:pw@{PUBLIC}/h", f"https://user@{PUBLIC}/h", f"https://:pw@{PUBLIC}/h"]
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="user:password@"):
        Destinations().check(url)


def test_the_length_is_bounded() -> None:
    base = f"https://{PUBLIC}/"
    assert Destinations().check(base + "a" * (MAX_URL_CHARS - len(base)))
    with pytest.raises(UnsafeUrl, match=f"longer than {MAX_URL_CHARS}"):
        Destinations().check(base + "a" * (MAX_URL_CHARS - len(base) + 1))


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "https:///nohost", "http://[::1/h", "http://h:99999/"]
)
def test_what_is_no_http_url_is_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        Destinations(LOOPBACK).check(url)
