"""One MCP connection to one server for one caller, with that caller's token on every request.

The token comes from a callable per request (an `httpx2.Auth` flow), so a token that expires during a long
turn is renewed, and a 401 triggers exactly one renewal and one retry (SPEC §5, ACCEPTANCE 19). A 403 with
`insufficient_scope` is remembered so the gateway can tell the person what is missing.

`mcp.Client` must be exited by the task that entered it (anyio cancel scopes), while the agent calls tools
from several tasks at once; so each connection is owned by a small task of its own that enters the client,
waits for `close()`, and exits it.

What a server sends back is bounded before anything parses it (`max_body_bytes`, mcp_clients/body_cap.py;
`breach` says what was refused) and its tool listings are screened tool by tool (`screen`,
mcp_clients/screen.py). `headers` (a registry remote's headers, values already read from the environment)
go on every request of this connection's own HTTP client, so to this server only; they are never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import httpx2
import jwt
from mcp import Client
from mcp.client.session import ElicitationFnT, LoggingFnT
from mcp.client.streamable_http import streamable_http_client

from mcp_clients.body_cap import DEFAULT_MAX_BODY_BYTES, Breach
from mcp_clients.egress import Resolver, outbound_client, shared_ssl_context
from mcp_clients.questions import log_level
from mcp_clients.screen import ListingScreen
from mcp_clients.tokens import TokenUnavailable

__all__ = ["BearerFlow", "ConnectError", "Connection", "shared_ssl_context"]

# A token held by one connection is re-read this often at most; well inside any token's lifetime.
TOKEN_REUSE_SECONDS = 30.0

TokenSource = Callable[[], Awaitable[str | None]]
Invalidate = Callable[[], Awaitable[None]]


class ConnectError(Exception):
    """The server could not be reached or refused the connection; the message is safe to show."""


class BearerFlow(httpx2.Auth):
    def __init__(self, token: TokenSource, invalidate: Invalidate) -> None:
        self._token = token
        self._invalidate = invalidate
        self.last_status: int | None = None
        self.insufficient_scope: str | None = None
        self.token_error: TokenUnavailable | None = (
            None  # why no token could be had, when that stopped a request
        )
        self._held: tuple[str | None, float] | None = None

    async def _current(self) -> str | None:
        """The token this connection holds, re-read from the broker (a Redis read and a decryption) at
        most every TOKEN_REUSE_SECONDS and never past a little before the token's own expiry."""
        now = time.time()
        if self._held is not None and now < self._held[1]:
            return self._held[0]
        token = await self._fetch()
        self._held = (token, now + _hold_seconds(token, now))
        return token

    async def _fetch(self) -> str | None:
        try:
            return await self._token()
        except TokenUnavailable as exc:
            self.token_error = exc
            raise

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._current()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        self.last_status = response.status_code
        if response.status_code == 401 and token is not None:
            await self._invalidate()
            retry = await self._fetch()
            now = time.time()
            self._held = (retry, now + _hold_seconds(retry, now))
            if retry is not None:
                request.headers["Authorization"] = f"Bearer {retry}"
                response = yield request
                self.last_status = response.status_code
        if response.status_code == 403:
            challenge = response.headers.get("www-authenticate", "")
            if "insufficient_scope" in challenge:
                self.insufficient_scope = challenge


def _hold_seconds(token: str | None, now: float) -> float:
    if token is None:
        return TOKEN_REUSE_SECONDS
    try:  # our own broker's token: its expiry only bounds how long we keep it, so no verification here
        expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return TOKEN_REUSE_SECONDS  # opaque: a 401 still leads to one renewal and one retry
    lifetime = expires - now
    return max(0.0, min(TOKEN_REUSE_SECONDS, lifetime - min(30.0, lifetime / 5)))


class Connection:
    def __init__(
        self,
        url: str,
        auth: BearerFlow,
        *,
        timeout: float,
        connect_timeout: float = 10.0,
        elicitation: ElicitationFnT | None = None,
        logging: LoggingFnT | None = None,
        resolver: Resolver | None = None,
        headers: Mapping[str, str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.url = url
        self._resolver = resolver
        self._headers = dict(headers or {})
        self._max_body_bytes = max_body_bytes
        self.breach = Breach()
        self.screen = ListingScreen()
        self.auth = auth
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        # Declaring the `elicitation` capability is what makes servers offer (and send) their questions,
        # so it is declared only when someone will answer them.
        self._elicitation = elicitation
        self._logging = logging  # a server's log messages (mcp_clients/questions.py: the bot's log at debug)
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._failure: BaseException | None = None
        self._owner: asyncio.Task[None] | None = None

    async def open(self) -> Client:
        if self._owner is None:
            self._owner = asyncio.create_task(self._own(), name=f"mcp-connection {self.url}")
        try:
            await asyncio.wait_for(self._ready.wait(), self._connect_timeout)
        except TimeoutError:
            raise ConnectError("the server did not answer in time") from None
        if self._client is None:
            cause = _leaf(self._failure)
            if isinstance(cause, TokenUnavailable):
                raise cause  # the caller's token, not the server: says nothing about whether it is up
            raise ConnectError(_describe(self._failure))
        return self._client

    async def _own(self) -> None:
        http = outbound_client(  # connects only to addresses the URL rules allow, checked after DNS
            resolver=self._resolver,
            auth=self.auth,
            headers=self._headers,
            timeout=httpx2.Timeout(self._timeout, connect=self._connect_timeout),
            follow_redirects=False,  # a redirect could carry the bearer token to another host
            max_body_bytes=self._max_body_bytes,
            breach=self.breach,
        )
        try:
            transport = self.screen.wrap(streamable_http_client(self.url, http_client=http))
            client_of = Client(
                transport,
                elicitation_callback=self._elicitation,
                logging_callback=self._logging,
                log_level=log_level() if self._logging is not None else None,
            )
            async with http, client_of as client:
                self.screen.version = lambda: client.protocol_version
                self._client = client
                self._ready.set()
                await self._closing.wait()
        except BaseException as exc:
            self._failure = exc
        finally:
            self._client = None
            self._ready.set()

    async def close(self) -> None:
        self._closing.set()
        if self._owner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._owner), 5)
            except TimeoutError:
                self._owner.cancel()


def _leaf(exc: BaseException | None) -> BaseException | None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException | None) -> str:
    """Unwrap anyio's exception groups into one line a person can act on."""
    exc = _leaf(exc)
    if exc is None:
        return "the connection closed"
    message: Any = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message)[:200]
