"""Refuse every network connection that does not stay on this machine.

Tests (and the subprocesses they start, through CHATOPS_NETGUARD=1) install it so that nothing can reach the
internet by mistake: a stray default base URL fails loudly instead of leaking a request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

__all__ = ["NetworkRefused", "install", "install_if_requested", "is_loopback"]

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_installed = False


class NetworkRefused(ConnectionRefusedError):
    """Raised instead of connecting to a non-loopback address."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str) and not is_loopback(address[0]):
        raise NetworkRefused(f"netguard: refused connection to {address[0]!r} (tests stay on loopback)")


def install() -> None:
    """Patch socket connect and DNS resolution for this process. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check_address(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check_address(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and not is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"netguard: refused to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo


def install_if_requested() -> None:
    """Install the guard when CHATOPS_NETGUARD=1 (set by the test suite for its subprocesses)."""
    if os.environ.get("CHATOPS_NETGUARD") == "1":
        install()
