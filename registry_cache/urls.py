"""Which MCP server URLs may be trusted at all (SPEC §6 "URLs").

https everywhere; plain http only for loopback hosts (local development and the fixture world);
link-local and cloud metadata addresses never, whatever the scheme, because a registry entry pointing at
them would turn the bot into a proxy for instance credentials.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["UnsafeUrl", "check_server_url", "is_loopback_host"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
# Hostnames that resolve to metadata services on the major clouds.
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)


class UnsafeUrl(ValueError):
    """The URL breaks a rule; the message says which (it is logged and shown to registry owners)."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    host = host.lower().strip("[]")
    if host in _LOOPBACK_NAMES:
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


def check_server_url(url: str) -> str:
    """Return the URL unchanged when it may be used, else raise `UnsafeUrl` with the reason."""
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
    address = _ip(host)
    if host in _METADATA_NAMES or (address is not None and address in _METADATA_ADDRESSES):
        raise UnsafeUrl("cloud metadata addresses are refused")
    if address is not None and address.is_link_local:
        raise UnsafeUrl("link-local addresses are refused")
    if address is not None and isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped = address.ipv4_mapped
        if mapped.is_link_local or mapped in _METADATA_ADDRESSES:
            raise UnsafeUrl("link-local addresses are refused")
    if address is not None and address.is_unspecified:
        raise UnsafeUrl("the unspecified address is refused")
    if scheme == "http" and not is_loopback_host(host):
        raise UnsafeUrl("plain http is accepted only for loopback hosts; use https")
    return url
