"""Every outbound HTTP connection the bot makes to an address it was told about: MCP servers, the registry,
the identity provider (SPEC §6 "URLs": checked on the address actually connected to).

A URL that reads fine can still lead somewhere it must not: a DNS name may resolve to 169.254.169.254
(today, or only on the second lookup), and a resolver reads `http://2852039166/` as that address too. So the
check belongs where the socket is opened: `GuardedBackend` resolves the host itself, refuses the connection
when any address it got is link-local, a cloud metadata address or unspecified (`refused_address`), and
then connects to the address it checked, never to the name (a second lookup could answer differently).
TLS still verifies the certificate against the URL's host name, which httpcore passes to `start_tls`.

Private ranges stay allowed (internal servers live there), and loopback too; which URLs may use plain
http is the URL rule's business (`registry_cache.urls.check_server_url`), not the socket's.

Errors: a refused address raises `AddressRefused` (an `httpcore2.ConnectError`, which httpx2 turns into
`httpx2.ConnectError` with the same message, so every caller already handles it as "unreachable").
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import httpcore2
import httpx2

from mcp_clients.body_cap import Breach, cap_response
from registry_cache.urls import host_address, refused_address

__all__ = [
    "AddressRefused",
    "GuardedBackend",
    "GuardedTransport",
    "Resolver",
    "outbound_client",
    "shared_ssl_context",
    "system_resolver",
]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_SSL: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one costs ~20 ms (api-facts §0.2), sharing it costs nothing."""
    global _SSL
    if _SSL is None:
        _SSL = httpx2.create_ssl_context()
    return _SSL


class AddressRefused(httpcore2.ConnectError):
    """The host resolves to an address the bot never connects to; the message says which and why."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for `host`, IP literals (in any spelling that
    `inet_aton` accepts) read without asking it."""
    literal = host_address(host)
    if literal is not None:
        return [str(literal)]
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, resolver: Resolver | None = None, inner: httpcore2.AsyncNetworkBackend | None = None):
        self._resolve = resolver or system_resolver
        self._inner = inner or httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with anyio.fail_after(timeout):
                addresses = list(await self._resolve(host, port))
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} took too long") from None
        except OSError as exc:
            raise httpcore2.ConnectError(f"{host} could not be resolved ({exc})") from None
        if not addresses:
            raise httpcore2.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            why = refused_address(address)
            if why is not None:
                raise AddressRefused(f"{host} resolves to {address}, {why}: not connecting")
        failure = httpcore2.ConnectError(f"{host} could not be reached")
        for address in addresses:  # in the resolver's order, all within the one connect timeout
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=left, local_address=local_address, socket_options=socket_options
                )
            except httpcore2.ConnectError as exc:  # a timeout ends the attempt: it has used the budget
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used for outbound calls")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's own transport with its connection pool on `GuardedBackend`.

    httpx2 takes no network backend in its transport's constructor (encode/httpx#3749 proposes one), so the
    pool it builds is replaced by one built with ours, with the same settings; everything else (request
    mapping, exception mapping, streaming) stays httpx2's own. Proxies from the environment are not used:
    through a proxy the address connected to would be the proxy's, and the check would prove nothing."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
        limits: httpx2.Limits | None = None,
        max_body_bytes: int | None = None,
        breach: Breach | None = None,
    ) -> None:
        self._max_body = max_body_bytes
        self._breach = breach or Breach()
        context = verify or shared_ssl_context()
        limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(resolver),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if self._max_body is None:
            return response
        return cap_response(request, response, self._max_body, self._breach)


def outbound_client(
    *,
    resolver: Resolver | None = None,
    max_body_bytes: int | None = None,
    breach: Breach | None = None,
    **kwargs: Any,
) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` whose every connection goes through `GuardedBackend`. With `max_body_bytes`,
    every response body is capped while it streams in (mcp_clients/body_cap.py; refusals noted in `breach`)
    and answers are asked for uncompressed. Other keyword arguments are the client's own (timeout, auth,
    headers, follow_redirects, ...)."""
    if max_body_bytes is not None:
        kwargs["headers"] = {"Accept-Encoding": "identity", **dict(kwargs.get("headers") or {})}
    transport = GuardedTransport(resolver=resolver, max_body_bytes=max_body_bytes, breach=breach)
    return httpx2.AsyncClient(transport=transport, trust_env=False, **kwargs)
