"""Which URLs and addresses may be trusted at all (SPEC §6 "URLs").

https everywhere; plain http only for loopback hosts (local development and the fixture world);
link-local and cloud metadata addresses never, whatever the scheme, because a registry entry pointing at
them would turn the bot into a proxy for instance credentials.

An address is judged the way the resolver sees it: `inet_aton` (and so getaddrinfo and every browser) reads
`2852039166`, `0xA9FEA9FE`, `0251.0376.0251.0376` and `169.254.43518` as 169.254.169.254, and an IPv6
address may carry an IPv4 one inside it. `check_server_url` refuses such spellings when a URL is read;
`refused_address` is what the outbound transport (mcp_clients/egress.py) asks about every address it is
about to connect to, after DNS.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = [
    "UnsafeUrl",
    "canonical_resource",
    "check_server_url",
    "host_address",
    "is_loopback_host",
    "refused_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
# Hostnames that resolve to metadata services on the major clouds.
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # connecting to 0.x reaches this host on Linux
# IPv6 prefixes whose last 32 bits are an IPv4 address that the packet ends up at (IPv4-compatible and
# NAT64 well-known prefix); IPv4-mapped ones are `ipv4_mapped`.
_EMBEDDING = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))
_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
# What RFC 3986 never allows in a URL. urlsplit takes them silently, and a client would then connect to
# something other than what the registry owners read (a space ends the URL for some readers, not others).
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_NOT_URL = re.compile(r'[<>"\\^`|]|[^\x00-\x7f]')


class UnsafeUrl(ValueError):
    """The URL breaks a rule; the message says which (it is logged and shown to registry owners)."""


def _number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:], 16)
    return int(part, 8) if part.startswith("0") else int(part)


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address `inet_aton` makes of `host` (1 to 4 dot-separated decimal, 0x-hex or 0-octal numbers,
    the last filling the remaining bytes), or None when it is a name."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    *leading, last = [_number(p) for p in parts]
    if any(n > 255 for n in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def host_address(host: str) -> Address | None:
    """The IP address a URL host names, however it is written, or None for a DNS name."""
    host = host.strip("[]").lower().removesuffix(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address) or address.is_loopback or address.is_unspecified:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in _EMBEDDING):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refused_address(address: str | Address) -> str | None:
    """Why the bot must not connect to `address` (an IP literal, as a resolver returns it), or None."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return "it is not an IP address"
    inner = _embedded_ipv4(address)
    for candidate in (address, inner) if inner is not None else (address,):
        if candidate in _METADATA_ADDRESSES:
            return (
                "a link-local cloud metadata address"
                if candidate.is_link_local
                else "a cloud metadata address"
            )
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_unspecified or candidate in _THIS_NETWORK:
            return "the unspecified address"
    return None


def is_loopback_host(host: str) -> bool:
    host = host.lower().strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    address = host_address(host)
    return address is not None and address.is_loopback


def check_server_url(url: str) -> str:
    """Return the URL unchanged when it may be used, else raise `UnsafeUrl` with the reason."""
    if "{" in url or "}" in url:
        raise UnsafeUrl("the URL is a template with unfilled {variables}")
    if _SPACE_OR_CONTROL.search(url):
        raise UnsafeUrl("the URL contains a space or a control character")
    if _NOT_URL.search(url):
        raise UnsafeUrl("the URL contains characters a URL may not hold (non-ASCII hosts go in punycode)")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise UnsafeUrl(f"malformed URL ({exc})") from None
    del port
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        raise UnsafeUrl(f"scheme {scheme or '(none)'!r} is not allowed; use https")
    if not host:
        raise UnsafeUrl("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are not allowed")
    if parts.fragment:
        raise UnsafeUrl("a fragment is not allowed in a server URL")
    if host.removesuffix(".") in _METADATA_NAMES:
        raise UnsafeUrl("cloud metadata addresses are refused")
    address = host_address(host)
    why = refused_address(address) if address is not None else None
    if why is not None:
        raise UnsafeUrl(f"{host} is {why}; refused")
    if scheme == "http" and not is_loopback_host(host):
        raise UnsafeUrl("plain http is accepted only for loopback hosts; use https")
    return url


def canonical_resource(resource: str) -> str:
    """The form two resource URIs are compared in: an identity provider may treat `HTTPS://Host/mcp/` and
    `https://host/mcp` as one audience, so the bot must too before deciding that two servers differ."""
    parts = urlsplit(resource.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().removesuffix(".")
    address = host_address(host)
    if address is not None:
        host = f"[{address}]" if address.version == 6 else str(address)
    default = {"https": 443, "http": 80}.get(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, default) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"
