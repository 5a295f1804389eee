"""Connecting one `auth: oauth` server (SPEC §5 "Servers with their own authorization server"), the Slack
side of `mcp_clients.server_oauth`: the offers the bot hands a person ("Connect <server>" in the thread and
in App Home), the requests waiting for a connection, and Disconnect.

1. `offer()` mints a start link for one (team, user, server), valid 10 minutes, handed only to that person;
   a request id in `waiting` is answered again once they have connected.
2. `start()` (GET /oauth/server-start/<offer>) asks `PerServerAuth` for the authorization request: the
   company's groups decide first whether this person may use the server at all; the single-use `state`
   is bound to the person, the server and the browser (the fingerprint of the secret the web layer puts in
   a cookie), with PKCE S256 and `resource`.
3. `finish()` (GET /oauth/server-callback) redeems the code there and keeps the tokens sealed for this
   person and this server only; what was waiting for the connection is handed back to be answered.

The offer is not a credential: whoever opens it is sent to the server's own sign-in, and the tokens that
come back are kept for the person the offer was made for only if the same browser started it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from mcp_clients.server_oauth import Connected, PerServerAuth, audience_of
from mcp_clients.server_oauth_errors import ServerAuthError
from mcp_clients.tokens import Revocation
from registry_cache.model import ServerEntry

__all__ = ["ServerConnected", "ServerLinking", "StartFailed"]

OFFER_TTL_SECONDS = 600
WAITING_TTL_SECONDS = 1800


class StartFailed(Exception):
    """The offer cannot start a connection; the message is shown on the page."""


@dataclass(frozen=True)
class ServerConnected:
    connected: Connected
    waiting: tuple[str, ...]  # ids of requests that were waiting for this connection


class ServerLinking:
    def __init__(self, redis: aioredis.Redis, auth: PerServerAuth, *, public_url: str) -> None:
        self._redis = redis
        self.auth = auth
        self._public_url = public_url.rstrip("/")

    @staticmethod
    def _waiting_key(team: str, user: str, server: str) -> str:
        return f"chatops:srvoffer:waiting:{team}:{user}:{server}"

    async def offer(self, team: str, user: str, server: str, *, waiting: str | None = None) -> str:
        """The "Connect <server>" link for this person (a registry name). A request id in `waiting` is
        answered again once they connect."""
        by_user = f"chatops:srvoffer:user:{team}:{user}:{server}"
        existing = await self._redis.get(by_user)
        offer = existing.decode() if isinstance(existing, bytes) else existing
        if not offer or not await self._redis.exists(f"chatops:srvoffer:{offer}"):
            offer = secrets.token_urlsafe(24)
            data = json.dumps({"team": team, "user": user, "server": server})
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"chatops:srvoffer:{offer}", data, ex=OFFER_TTL_SECONDS)
                pipe.set(by_user, offer, ex=OFFER_TTL_SECONDS)
                await pipe.execute()
        if waiting:
            key = self._waiting_key(team, user, server)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrem(key, 0, waiting)  # asked twice in one request: answered once
                pipe.rpush(key, waiting)
                pipe.expire(key, WAITING_TTL_SECONDS)
                await pipe.execute()
        return f"{self._public_url}/oauth/server-start/{offer}"

    async def start(self, offer: str, *, browser: str) -> str:
        """The authorization server's URL for this offer, bound to the browser holding `browser`."""
        raw = await self._redis.get(f"chatops:srvoffer:{offer}")
        if raw is None:
            raise StartFailed("This connect link has expired. Press Connect in Slack again to get a new one.")
        who = json.loads(raw)
        try:
            return await self.auth.authorization_url(
                str(who["team"]), str(who["user"]), str(who["server"]), browser=browser
            )
        except ServerAuthError as exc:
            raise StartFailed(f"This server cannot be connected right now ({exc}).") from None

    async def finish(
        self, *, state: str | None, code: str | None, iss: str | None, error: str | None, browser: str | None
    ) -> ServerConnected:
        """Raises `server_oauth_errors.ConnectFailed` (shown on the page, audited) when nothing connected."""
        connected = await self.auth.finish(state, code, iss, browser=browser, error=error)
        key = self._waiting_key(connected.team, connected.user, connected.server)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key, f"chatops:srvoffer:user:{connected.team}:{connected.user}:{connected.server}")
            waiting_raw, _ = await pipe.execute()
        waiting = tuple(str_if_bytes(w) for w in waiting_raw)
        return ServerConnected(connected, waiting)

    async def connected(self, team: str, user: str, entry: ServerEntry) -> bool:
        return await self.auth.connected(team, user, entry)

    async def disconnect(self, team: str, user: str, entry: ServerEntry) -> Revocation:
        """Forget this person's tokens for `entry` and revoke them at its authorization server (RFC 7009)."""
        return await self.auth.revoker.disconnect(team, user, audience_of(entry))

    async def disconnect_all(self, team: str, user: str, entries: Sequence[ServerEntry]) -> None:
        """The person disconnected their account: every server connection of theirs goes too (revoked where
        the registry still lists the server, forgotten everywhere)."""
        for entry in entries:
            if entry.governance.auth == "oauth":
                await self.disconnect(team, user, entry)
        await self.auth.store.forget_person(team, user)
