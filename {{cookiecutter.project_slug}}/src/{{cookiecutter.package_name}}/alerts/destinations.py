"""Where a tenant's alerts may go: never to the app's own network (server-side request forgery).

A tenant names the URL; the app POSTs to it from inside its network. So a URL is refused
when its host is, or resolves to, an internal address: loopback, private (RFC 1918),
carrier-grade NAT, link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10),
unique-local IPv6 (fc00::/7), unspecified (0.0.0.0, ::), multicast or reserved, IPv4-mapped
IPv6 forms of those included, unless ``BUDGET_WEBHOOK_ALLOW_NETWORKS`` lists its network.

Checked twice: when the URL is registered (a clear 400), and before each POST, because a
DNS answer can change after registration (DNS rebinding). The POST then connects to the
very address that was checked (the URL's host goes in ``Host`` and the TLS server name),
so a second, different DNS answer is never asked for.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..config_alerts import LOOPBACK, Network

__all__ = ["LOOPBACK", "Destinations", "Target", "UnsafeUrl", "is_internal", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_CHARS = 2048


class UnsafeUrl(ValueError):
    """A URL the app will not POST to; the message says why (one line, for a 400)."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what a connection could reach)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to ``url`` (its host is the checked address), send ``host``
    as the Host header, and verify TLS against ``server_name``."""

    url: str
    host: str
    server_name: str


@dataclass(frozen=True)
class Destinations:
    """The rule for tenants' URLs: internal addresses only inside ``allow``."""

    allow: tuple[Network, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False)

    def allowed(self, address: Address) -> bool:
        if not is_internal(address):
            return True
        mapped = getattr(address, "ipv4_mapped", None) or address
        return any(mapped in network for network in self.allow)

    def check(self, url: str) -> Target:
        """``url`` pinned to one checked address, or UnsafeUrl naming the reason."""
        if len(url) > MAX_URL_CHARS:
            raise UnsafeUrl(f"url is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UnsafeUrl("url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeUrl("url must be an http(s) URL with a host")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UnsafeUrl("url must not carry user:password@ (put no credentials in it)")
        host = parts.hostname
        addresses = self._addresses(host, port)
        refused = [address for address in addresses if not self.allowed(address)]
        if refused:
            named = host if host == str(refused[0]) else f"{host} ({refused[0]})"
            raise UnsafeUrl(
                f"url's host {named} is an internal address: alerts go only to public "
                "hosts (BUDGET_WEBHOOK_ALLOW_NETWORKS lists exceptions)"
            )
        pinned = addresses[0]
        literal = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        pinned_url = parts._replace(netloc=f"{literal}:{port}").geturl()
        return Target(pinned_url, parts.netloc, host)

    def _addresses(self, host: str, port: int) -> Sequence[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        found = []
        for text in self.resolver(host, port):
            try:
                found.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        if not found:
            raise UnsafeUrl(f"url's host {host} does not resolve to an address")
        return found
