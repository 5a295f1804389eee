"""One token per (person, server), obtained for that person and that server only (SPEC §5).

State lives in Redis so any process can serve any person:
- `chatops:link:{team}:{user}`: the linked identity (sub, email, groups and when they were read), the
  sealed refresh token and the resources requested at linking.
- `chatops:tok:{team}:{user}:{audience digest}`: a sealed access token for one `Audience` (server name, URL
  and resource together), kept until shortly before it expires. A token is only ever found again for the
  very server, at the very URL, it was obtained for: a server that moves or is renamed starts afresh, and
  the ciphertext is sealed to the audience too, so one copied under another server's key does not open.
- `chatops:svc:{audience digest}`: the bot's own client-credentials token for `auth: service` servers.

Refreshes for one person are serialized across processes with a Redis lock, and the cache is re-checked
under the lock, so ten concurrent calls make one refresh and a rotating provider never sees a refresh token
twice (which would revoke the family). The lock is extended while its holder works, so it outlives however
long the provider takes; its TTL only bounds how long a holder that died blocks the others.
`invalid_grant`/`invalid_target` end the link: the refresh token is discarded and the person is asked to
connect again; there is never a fallback to another identity. Disconnect forgets the link and revokes its
refresh token at the provider (RFC 7009) when the provider offers revocation.

Tokens the provider issues as JWTs are verified (and must name the linked `sub`); opaque ones are passed to
their server unread and kept for their `expires_in`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT
from redis.utils import str_if_bytes

from mcp_clients.audience import Audience
from mcp_clients.person import identify
from mcp_clients.provider import (
    TOKEN_REQUEST_TIMEOUT_SECONDS,
    Claims,
    LinkEnded,
    Provider,
    ProviderError,
    TokenResponse,
    is_jwt,
)
from mcp_clients.refresh_lock import LOCK_SECONDS, kept
from mcp_clients.sealing import Binding, Sealer, SealError

__all__ = [
    "Audience",
    "Identity",
    "NotLinked",
    "ReconnectNeeded",
    "Revocation",
    "TokenBroker",
    "TokenUnavailable",
]

log = logging.getLogger(__name__)

GROUPS_MAX_AGE_SECONDS = 300

# What Disconnect did at the provider: revoked the refresh token, found no revocation endpoint, could not
# reach it, or had no refresh token to revoke.
Revocation = Literal["revoked", "unsupported", "failed", "nothing"]


class TokenUnavailable(Exception):
    """No token can be had right now; the message is safe to show the person."""


class NotLinked(TokenUnavailable):
    """The person has not connected their company identity yet."""


class ReconnectNeeded(TokenUnavailable):
    """The link ended (revoked, rotated away, a server added since linking); connect again."""


@dataclass(frozen=True)
class Identity:
    team: str
    user: str
    sub: str
    email: str
    groups: frozenset[str]
    groups_at: float
    resources: tuple[str, ...]


class TokenBroker:
    def __init__(
        self,
        redis: aioredis.Redis,
        provider: Provider,
        sealer: Sealer,
        *,
        clock: Callable[[], float] = time.time,
        lock_seconds: float = LOCK_SECONDS,
    ) -> None:
        self._redis = redis
        self._provider = provider
        self._sealer = sealer
        self._clock = clock
        self._lock_seconds = lock_seconds

    def _binding(self, team: str, user: str) -> Binding:
        return Binding(team, user, self._provider.issuer)

    @staticmethod
    def _link_key(team: str, user: str) -> str:
        return f"chatops:link:{team}:{user}"

    @staticmethod
    def _token_key(team: str, user: str, audience: Audience) -> str:
        return f"chatops:tok:{team}:{user}:{audience.digest}"

    # --- linking -------------------------------------------------------------------------------------

    async def link(
        self, team: str, user: str, *, claims: Claims, refresh_token: str | None, resources: Sequence[str]
    ) -> Identity:
        """Store a fresh link (replacing any earlier one and its cached tokens)."""
        await self.unlink(team, user)
        mapping: dict[FieldT, EncodableT] = {
            "sub": claims.sub,
            "email": claims.email,
            "groups": json.dumps(sorted(claims.groups)),
            "groups_at": repr(self._clock()),
            "issuer": self._provider.issuer,
            "resources": json.dumps(list(resources)),
            "linked_at": repr(self._clock()),
        }
        if refresh_token:
            mapping["refresh"] = self._sealer.seal(refresh_token, self._binding(team, user))
        await self._redis.hset(self._link_key(team, user), mapping=mapping)
        identity = await self.identity(team, user)
        assert identity is not None
        return identity

    async def unlink(self, team: str, user: str) -> None:
        keys = [self._link_key(team, user)]
        keys += [k async for k in self._redis.scan_iter(match=f"chatops:tok:{team}:{user}:*", count=500)]
        await self._redis.delete(*keys)

    async def identity(self, team: str, user: str) -> Identity | None:
        raw = await self._redis.hgetall(self._link_key(team, user))
        if not raw:
            return None
        data = {str_if_bytes(k): str_if_bytes(v) for k, v in raw.items()}
        if data.get("issuer") != self._provider.issuer:
            return None  # linked at another identity provider: not an identity we can vouch for
        return Identity(
            team=team,
            user=user,
            sub=data["sub"],
            email=data.get("email", ""),
            groups=frozenset(json.loads(data.get("groups", "[]"))),
            groups_at=float(data.get("groups_at", "0")),
            resources=tuple(json.loads(data.get("resources", "[]"))),
        )

    async def linked(self, team: str) -> list[Identity]:
        """Every linked identity of `team`, groups as last read (who a new approval is pushed to). A scan:
        fine for the thousands of people a workspace links; an index would be the next step beyond."""
        prefix, found = self._link_key(team, ""), []
        async for key in self._redis.scan_iter(match=f"{prefix}*", count=1000):
            user = str_if_bytes(key)[len(prefix) :]
            if user and ":" not in user and (identity := await self.identity(team, user)) is not None:
                found.append(identity)
        return found

    async def require_identity(self, team: str, user: str) -> Identity:
        identity = await self.identity(team, user)
        if identity is None:
            raise NotLinked("connect your company account first")
        return identity

    # --- user tokens ---------------------------------------------------------------------------------

    async def user_token(self, team: str, user: str, audience: Audience) -> str:
        """An access token for `audience` issued to this person. Raises `TokenUnavailable` subclasses."""
        key, binding = self._token_key(team, user, audience), self._binding(team, user)
        cached = await self._cached(key, binding, audience)
        if cached is not None:
            return cached
        async with self._refresh_lock(team, user):
            cached = await self._cached(key, binding, audience)
            if cached is not None:  # another process refreshed while we waited for the lock
                return cached
            return await self._issue(team, user, audience)

    async def invalidate(self, team: str, user: str, audience: Audience) -> None:
        """Forget the cached token (a server answered 401 to it)."""
        await self._redis.delete(self._token_key(team, user, audience))

    async def current_identity(
        self, team: str, user: str, *, max_age: float = GROUPS_MAX_AGE_SECONDS
    ) -> Identity:
        """The identity with groups no older than `max_age`, re-read from the provider when needed: a
        refresh naming no resource (a token for the provider itself), then its ID token or userinfo."""
        identity = await self.require_identity(team, user)
        if self._clock() - identity.groups_at <= max_age:
            return identity
        async with self._refresh_lock(team, user):
            identity = await self.require_identity(team, user)
            if self._clock() - identity.groups_at <= max_age:  # re-read by another process meanwhile
                return identity
            grant = await self._grant(team, user)
            issued = await self._ask(team, user, self._provider.refresh(grant.refresh_token))
            await self._keep_rotated(team, user, grant, issued.refresh_token)
            try:
                who = await identify(self._provider, issued, for_provider=True)
            except ProviderError as exc:
                raise TokenUnavailable(f"your groups could not be read again ({exc})") from None
            if who.claims.sub != identity.sub:
                await self.unlink(team, user)
                raise ReconnectNeeded("the identity provider answered for a different person; connect again")
            await self._redis.hset(self._link_key(team, user), mapping=self._groups_update(who.claims.groups))
        return await self.require_identity(team, user)

    async def _issue(self, team: str, user: str, audience: Audience) -> str:
        """Obtain, check and cache a token for `audience` as its registry entry says (SPEC §5): `resource`
        (RFC 8707), `scope`, or `exchange` (RFC 8693, the person's own token as the subject)."""
        grant = await self._grant(team, user)
        provider = self._provider
        if audience.token == "exchange":
            own = await self._ask(team, user, provider.refresh(grant.refresh_token))
            grant = await self._keep_rotated(team, user, grant, own.refresh_token)
            issued = await self._ask(
                team, user, provider.exchange(own.access_token, audience=audience.resource)
            )
        else:
            how = {"scope": audience.scope} if audience.token == "scope" else {"resource": audience.resource}
            issued = await self._ask(team, user, provider.refresh(grant.refresh_token, **how))
            await self._keep_rotated(team, user, grant, issued.refresh_token)
        expires_at = issued.expires_at
        if is_jwt(issued.access_token) and await self._can_verify():
            # Entra ID's `.default` tokens name the API's own id as audience; the server checks that one.
            expected = None if audience.token == "scope" else audience.resource
            try:
                claims = await provider.verify(issued.access_token, audience=expected)
            except ProviderError as exc:
                raise TokenUnavailable(f"the identity provider issued an unusable token ({exc})") from None
            if claims.sub != grant.identity.sub:
                await self.unlink(team, user)
                raise ReconnectNeeded("the identity provider answered for a different person; connect again")
            if claims.has_groups:
                await self._redis.hset(self._link_key(team, user), mapping=self._groups_update(claims.groups))
            expires_at = claims.expires_at
        # else opaque: passed to the server unread (SPEC §5), kept until shortly before `expires_in` ends
        key = self._token_key(team, user, audience)
        await self._store(key, self._binding(team, user), audience, issued.access_token, expires_at)
        return issued.access_token

    async def _grant(self, team: str, user: str) -> _Grant:
        identity = await self.require_identity(team, user)
        sealed = await self._redis.hget(self._link_key(team, user), "refresh")
        if sealed is None:
            raise ReconnectNeeded("your link has no refresh grant; connect again")
        try:
            refresh_token = self._sealer.open(str_if_bytes(sealed), self._binding(team, user))
        except SealError:
            await self.unlink(team, user)
            raise ReconnectNeeded("your stored link could not be opened; connect again") from None
        return _Grant(identity, str_if_bytes(sealed), refresh_token)

    async def _ask(self, team: str, user: str, request: Awaitable[TokenResponse]) -> TokenResponse:
        """One token request; a link the provider ended is forgotten, other failures are transient."""
        try:
            return await request
        except LinkEnded as exc:
            await self.unlink(team, user)
            raise ReconnectNeeded(f"your link has ended ({exc.error}); connect again") from None
        except ProviderError as exc:
            raise TokenUnavailable(str(exc)) from None

    async def _keep_rotated(self, team: str, user: str, grant: _Grant, rotated: str | None) -> _Grant:
        """Keep the newest refresh token (rotation), or the old one when none came back; either way sealed
        under the first CHATOPS_SECRET_KEY, so a key being rotated out stops being needed."""
        binding = self._binding(team, user)
        if rotated:
            sealed, refresh_token = self._sealer.seal(rotated, binding), rotated
        else:
            sealed, refresh_token = self._sealer.reseal(grant.sealed, binding), grant.refresh_token
        await self._redis.hset(self._link_key(team, user), "refresh", sealed)
        return _Grant(grant.identity, sealed, refresh_token)

    def _groups_update(self, groups: frozenset[str]) -> dict[FieldT, EncodableT]:
        return {"groups": json.dumps(sorted(groups)), "groups_at": repr(self._clock())}

    async def _can_verify(self) -> bool:
        try:
            return await self._provider.can_verify()
        except ProviderError as exc:
            raise TokenUnavailable(str(exc)) from None

    @contextlib.asynccontextmanager
    async def _refresh_lock(self, team: str, user: str) -> AsyncIterator[None]:
        """The person's refresh lock, held (and extended) for the block (`mcp_clients.refresh_lock`)."""
        # A waiter gives up after one lease and one more token request: the holder is still working by then.
        wait = self._lock_seconds + TOKEN_REQUEST_TIMEOUT_SECONDS
        name = f"chatops:lock:refresh:{team}:{user}"
        async with kept(self._redis, name, self._lock_seconds, wait=wait) as acquired:
            if not acquired:
                raise TokenUnavailable("the identity provider is slow to answer; try again in a moment")
            yield

    # --- disconnecting -------------------------------------------------------------------------------

    async def disconnect(self, team: str, user: str) -> Revocation:
        """Forget the link and its tokens, then revoke its refresh token at the provider (RFC 7009), which
        ends every token issued from it there too. What happened at the provider is returned."""
        sealed = await self._redis.hget(self._link_key(team, user), "refresh")
        await self.unlink(team, user)  # first: whatever the provider says, nothing here can use it again
        if sealed is None:
            return "nothing"
        try:
            refresh_token = self._sealer.open(str_if_bytes(sealed), self._binding(team, user))
        except SealError:
            return "nothing"
        try:
            return "revoked" if await self._provider.revoke(refresh_token) else "unsupported"
        except ProviderError as exc:
            log.warning("could not revoke a refresh token of %s at the provider: %s", user, exc)
            return "failed"

    # --- service tokens ------------------------------------------------------------------------------

    async def service_token(self, audience: Audience) -> str:
        binding = Binding("_service", self._provider.client_id, self._provider.issuer)
        key = f"chatops:svc:{audience.digest}"
        cached = await self._cached(key, binding, audience)
        if cached is not None:
            return cached
        how = {"scope": audience.scope} if audience.token == "scope" else {"resource": audience.resource}
        try:
            issued = await self._provider.client_credentials(**how)
            expires_at = issued.expires_at
            if is_jwt(issued.access_token) and await self._provider.can_verify():
                expected = None if audience.token == "scope" else audience.resource
                expires_at = (await self._provider.verify(issued.access_token, audience=expected)).expires_at
        except ProviderError as exc:
            raise TokenUnavailable(f"the bot's service identity could not get a token ({exc})") from None
        await self._store(key, binding, audience, issued.access_token, expires_at)
        return issued.access_token

    # --- cache ---------------------------------------------------------------------------------------

    async def _cached(self, key: str, binding: Binding, audience: Audience) -> str | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        entry = json.loads(raw)
        if float(entry["refresh_at"]) <= self._clock():
            return None
        try:
            return self._sealer.open(entry["token"], binding, purpose=audience.purpose)
        except SealError:
            return None

    async def _store(
        self, key: str, binding: Binding, audience: Audience, token: str, expires_at: float
    ) -> None:
        now = self._clock()
        lifetime = max(0.0, expires_at - now)
        # Renew a little before expiry: 30 s, or a fifth of a short lifetime.
        refresh_at = expires_at - min(30.0, lifetime / 5)
        if refresh_at <= now:
            return
        entry = {
            "token": self._sealer.seal(token, binding, purpose=audience.purpose),
            "refresh_at": refresh_at,
        }
        await self._redis.set(key, json.dumps(entry), px=max(1, int((expires_at - now) * 1000)))


@dataclass(frozen=True)
class _Grant:
    """A person's link as one refresh needs it: who, and their refresh token (sealed and open)."""

    identity: Identity
    sealed: str
    refresh_token: str
