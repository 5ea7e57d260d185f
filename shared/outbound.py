"""Requests to URLs that someone else chose (providers' webhooks): public hosts only.

`public_target` checks the URL (http or https; https only when required), resolves its host
once and refuses it unless every address is global (no private, loopback, link-local,
carrier-grade NAT, multicast, reserved or unspecified address; an IPv4-mapped IPv6 address
counts as its IPv4 address). `post_pinned` then connects to the address that was checked,
keeping the URL's host in the `Host` header and as the TLS server name (SNI and certificate
check), so a DNS answer that changes between the check and the connection (DNS rebinding)
cannot send the request elsewhere. No redirects are followed and no proxy from the
environment is used.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


class RefusedURLError(ValueError):
    """The URL may not be requested (scheme, host or a non-public address)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (a name or an address)
    port: int
    path: str  # with the query
    address: str  # the checked IP address to connect to

    @property
    def pinned_url(self) -> str:
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, require_https: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an acceptable URL, before any DNS lookup."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURLError(f"not a URL: {exc}") from None
    allowed = ("https",) if require_https else ("http", "https")
    if parts.scheme not in allowed:
        raise RefusedURLError(f"the scheme must be {' or '.join(allowed)}")
    if not parts.hostname:
        raise RefusedURLError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedURLError("the URL must not carry a user name or password")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def public_target(url: str, *, require_https: bool, allow_private: bool = False) -> Target:
    """Check the URL and resolve its host once; `allow_private` (tests, local development)
    skips only the address check."""
    scheme, host, port, path = check_url(url, require_https=require_https)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedURLError(f"the host does not resolve: {exc.__class__.__name__}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise RefusedURLError("the host does not resolve")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:  # one non-public answer is enough: a rebinding name mixes them
            raise RefusedURLError(f"the host resolves to a non-public address ({refused[0]})")
    return Target(scheme, host, port, path, addresses[0])


def post_pinned(target: Target, body: bytes, headers: dict[str, str], timeout: float,
                verify: ssl.SSLContext | bool = True) -> httpx.Response:
    """POST to the checked address, as if to the URL's host (`verify`: the trusted CAs,
    the system's by default; the certificate must name the URL's host)."""
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                      verify=verify) as client:
        return client.post(target.pinned_url, content=body,
                           headers={**headers, "Host": target.host_header},
                           extensions={"sni_hostname": target.host})
