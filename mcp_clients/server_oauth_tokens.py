"""Tokens from `auth: oauth` servers' authorization servers: the token endpoint, and where tokens are kept.

Every token request carries `resource` (RFC 8707) and the client's authentication (`oauth_client_auth`).
A person's tokens for one server are one sealed record, `chatops:srvtok:{team}:{user}:{audience digest}`,
keyed by `Audience` (server name, URL and resource, as the company's tokens are) and sealed to (team, user,
issuer) with the audience in the purpose: it opens only for that person, that authorization server and that
server, so a record copied under another server's key, or edited to point its refreshes at another token
endpoint, does not open at all. Without a refresh token the record expires with its access token.

Errors: `TokenRefused` (the endpoint said no: `ended` when the grant is gone for good), `ServerAuthError`
(unreachable, malformed answers, a token type the bot cannot send).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx2
import redis.asyncio as aioredis
from pydantic_core import from_json

from mcp_clients.oauth_client_auth import ClientAuthError, ClientCredentials
from mcp_clients.provider import TOKEN_REQUEST_TIMEOUT_SECONDS
from mcp_clients.sealing import Binding, Sealer, SealError
from mcp_clients.server_oauth_errors import ServerAuthError
from mcp_clients.tokens import Audience

__all__ = ["Grant", "Stored", "TokenRefused", "TokenStore", "post_token", "request_token"]

ENDED = frozenset({"invalid_grant", "invalid_target", "invalid_client", "unauthorized_client"})


class TokenRefused(ServerAuthError):
    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"the authorization server refused the token request ({error})")
        self.error = error
        self.status = status

    @property
    def ended(self) -> bool:
        """The grant (or the client) is gone: asking again with it cannot succeed."""
        return self.error in ENDED


@dataclass(frozen=True)
class Grant:
    access_token: str
    expires_at: float | None  # None: the server did not say; used until it answers 401
    refresh_token: str | None
    scope: str | None  # what was granted, when the server says


async def request_token(
    http: httpx2.AsyncClient, endpoint: str, form: dict[str, str], client: ClientCredentials, *, issuer: str
) -> Grant:
    """POST a token request to `endpoint` as `client` (its assertions addressed to `issuer`)."""
    return _grant(await post_token(http, endpoint, form, client, issuer=issuer))


async def post_token(
    http: httpx2.AsyncClient, endpoint: str, form: dict[str, str], client: ClientCredentials, *, issuer: str
) -> Mapping[str, Any]:
    """The JSON answer of a successful token request; `TokenRefused` with the endpoint's error otherwise."""
    try:
        # An assertion (private_key_jwt) is addressed to the issuer: RFC 7523bis, and what MCP
        # authorization servers check.
        form, basic = client.authenticate(client.method or client.choose(None), form, endpoint=issuer)
    except ClientAuthError as exc:
        raise ServerAuthError(str(exc)) from None
    try:
        response = await http.post(
            endpoint,
            data=form,
            auth=basic if basic is not None else httpx2.USE_CLIENT_DEFAULT,
            headers={"Accept": "application/json"},
            timeout=TOKEN_REQUEST_TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx2.HTTPError as exc:
        raise ServerAuthError(
            f"the authorization server could not be reached ({type(exc).__name__})"
        ) from None
    try:
        body = from_json(response.content) if response.content else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if response.status_code != 200:
        error = body.get("error")
        raise TokenRefused(
            str(error)[:60] if isinstance(error, str) else f"HTTP {response.status_code}",
            response.status_code,
        )
    return body


def _grant(body: Mapping[str, Any]) -> Grant:
    access, kind = body.get("access_token"), body.get("token_type", "Bearer")
    if not isinstance(access, str) or not access:
        raise ServerAuthError("the authorization server's answer has no access token")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise ServerAuthError(
            f"the authorization server issued a {str(kind)[:20]} token; only Bearer is sent"
        )
    expires_in, refresh, scope = body.get("expires_in"), body.get("refresh_token"), body.get("scope")
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else None
    return Grant(
        access_token=access,
        expires_at=time.time() + lifetime if lifetime is not None else None,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=scope if isinstance(scope, str) else None,
    )


@dataclass(frozen=True)
class Stored:
    """One person's tokens for one server, and everything needed to refresh them."""

    access_token: str
    expires_at: float | None
    refresh_token: str | None
    requested_scope: str  # what was asked for: step-up asks for this plus what the server wants
    resource: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    client: dict[str, Any]  # Client.record()
    url: str  # the server URL the tokens were obtained for

    def fresh(self, now: float) -> bool:
        if self.expires_at is None:
            return True
        lifetime = self.expires_at - now
        return lifetime > 0 and now < self.expires_at - min(30.0, lifetime / 5)


class TokenStore:
    def __init__(self, redis: aioredis.Redis, sealer: Sealer) -> None:
        self._redis = redis
        self._sealer = sealer

    @staticmethod
    def key(team: str, user: str, audience: Audience) -> str:
        return f"chatops:srvtok:{team}:{user}:{audience.digest}"

    @staticmethod
    def _purpose(audience: Audience) -> str:
        return f"server-oauth:{audience.digest}"

    async def load(self, team: str, user: str, audience: Audience) -> Stored | None:
        raw = await self._redis.get(self.key(team, user, audience))
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            binding = Binding(team, user, str(record["issuer"]))
            stored = Stored(
                **json.loads(self._sealer.open(record["sealed"], binding, self._purpose(audience)))
            )
        except (SealError, KeyError, TypeError, ValueError):
            return None  # not this person's, not this server's, or not ours: as if never connected
        if stored.url != audience.url or stored.issuer != record["issuer"]:
            return None
        return stored

    async def save(self, team: str, user: str, audience: Audience, stored: Stored) -> None:
        binding = Binding(team, user, stored.issuer)
        sealed = self._sealer.seal(json.dumps(asdict(stored)), binding, self._purpose(audience))
        lifetime = None
        if stored.refresh_token is None and stored.expires_at is not None:
            lifetime = max(1, int((stored.expires_at - time.time()) * 1000))
        value = json.dumps({"issuer": stored.issuer, "sealed": sealed})
        await self._redis.set(self.key(team, user, audience), value, px=lifetime)

    async def forget(self, team: str, user: str, audience: Audience) -> None:
        await self._redis.delete(self.key(team, user, audience))

    async def forget_person(self, team: str, user: str) -> None:
        keys = [k async for k in self._redis.scan_iter(match=f"chatops:srvtok:{team}:{user}:*", count=500)]
        if keys:
            await self._redis.delete(*keys)
