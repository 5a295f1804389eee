"""Which scopes to ask an `auth: oauth` server's authorization server for (MCP authorization, "Scope
Selection Strategy" and "Step-Up Authorization Flow").

- First connection: the `scope` of the server's challenge, else its metadata's `scopes_supported`, else
  none at all (asking for some would be guessing); `offline_access` is added when the authorization server
  lists it, so that a refresh token may come (it is never assumed).
- A 403 `insufficient_scope` on a call is a step-up: the next authorization asks for the union of what was
  asked before and what the server now wants. Each person gets at most STEP_UP_LIMIT step-ups per server per
  STEP_UP_WINDOW_SECONDS: a server that keeps asking for more than it grants would otherwise send the person
  round the consent screen forever (`StepUpRefused`).

State: `chatops:srvwant:{team}:{user}:{audience digest}`, a hash of the wanted `scope`, the challenge's
`resource_metadata`, and the step-up `count` (expiring with the window).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from mcp_clients.server_oauth_discovery import Challenge, Discovered
from mcp_clients.server_oauth_errors import StepUpRefused
from mcp_clients.tokens import Audience

__all__ = ["STEP_UP_LIMIT", "StepUps", "Want", "select_scope", "union"]

STEP_UP_LIMIT = 2  # re-authorizations for more scope: with the first connection, 3 authorizations at most
STEP_UP_WINDOW_SECONDS = 3600


def union(*scopes: str | None) -> str | None:
    """Space-separated scopes merged in order, each once; None when there are none."""
    merged = list(dict.fromkeys(s for scope in scopes if scope for s in scope.split()))
    return " ".join(merged) or None


@dataclass(frozen=True)
class Want:
    scope: str | None  # None: no step-up pending
    challenge: Challenge | None


def select_scope(found: Discovered, want: Want, previous: str | None) -> str | None:
    """The `scope` of the next authorization request (`previous`: what the last one asked for)."""
    if want.scope is not None:  # step-up: keep what was granted for the other operations
        scope = union(previous, want.scope)
    elif found.challenge is not None and found.challenge.scope:
        scope = found.challenge.scope
    elif found.prm is not None and found.prm.scopes_supported:
        scope = " ".join(found.prm.scopes_supported)
    else:
        return None
    if "offline_access" in (found.metadata.scopes_supported or ()):
        scope = union(scope, "offline_access")
    return scope


class StepUps:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @staticmethod
    def key(team: str, user: str, audience: Audience) -> str:
        return f"chatops:srvwant:{team}:{user}:{audience.digest}"

    async def record(self, team: str, user: str, audience: Audience, challenge: Challenge, name: str) -> str:
        """Note that the server wants more (`challenge`); return the scope the next authorization asks for.
        `StepUpRefused` past the limit (`name`: the server, as people know it)."""
        key = self.key(team, user, audience)
        count = await self._redis.hincrby(key, "count", 1)
        await self._redis.expire(key, STEP_UP_WINDOW_SECONDS, nx=True)
        if count > STEP_UP_LIMIT:
            raise StepUpRefused(
                f"{name} keeps asking for more access than it grants ({challenge.scope or 'no scope'}); "
                "ask its owners"
            )
        wanted = union(_optional_text(await self._redis.hget(key, "scope")), challenge.scope) or ""
        fields: dict[FieldT, EncodableT] = {
            "scope": wanted,
            "resource_metadata": challenge.resource_metadata or "",
        }
        await self._redis.hset(key, mapping=fields)
        return wanted

    async def wanted(self, team: str, user: str, audience: Audience) -> Want:
        raw = await self._redis.hgetall(self.key(team, user, audience))
        data = {_optional_text(k): _optional_text(v) for k, v in raw.items()}
        scope = data.get("scope")
        if scope is None:
            return Want(None, None)
        metadata = data.get("resource_metadata") or None
        return Want(scope, Challenge(403, "insufficient_scope", scope or None, metadata))

    async def granted(self, team: str, user: str, audience: Audience) -> None:
        """A step-up authorization came back: nothing is wanted any more (the count stays, for the limit)."""
        await self._redis.hdel(self.key(team, user, audience), "scope", "resource_metadata")


def _optional_text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
