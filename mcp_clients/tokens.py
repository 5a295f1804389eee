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
connect again; there is never a fallback to another identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError
from redis.typing import EncodableT, FieldT

from mcp_clients.provider import TOKEN_REQUEST_TIMEOUT_SECONDS, Claims, LinkEnded, Provider, ProviderError
from mcp_clients.sealing import Binding, Sealer, SealError

__all__ = ["Audience", "Identity", "NotLinked", "ReconnectNeeded", "TokenBroker", "TokenUnavailable"]

log = logging.getLogger(__name__)

GROUPS_MAX_AGE_SECONDS = 300
# The per-person refresh lock's TTL: one token request, plus room for the Redis work and the token's check
# around it. A live holder extends it every third of that (`_keep_alive`), so a slow provider never lets a
# second refresh in; the TTL only bounds how long a holder that died blocks the others.
LOCK_SECONDS = TOKEN_REQUEST_TIMEOUT_SECONDS + 5.0


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


@dataclass(frozen=True)
class Audience:
    """What a token is obtained for and may be sent to: one server name, at one URL, for one resource."""

    server: str
    url: str
    resource: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.server, self.url, self.resource]).encode()).hexdigest()[:32]

    @property
    def purpose(self) -> str:
        """The sealing purpose of its cached token: the ciphertext opens for this audience only."""
        return f"access:{self.digest}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        data = {_text(k): _text(v) for k, v in raw.items()}
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

    async def require_identity(self, team: str, user: str) -> Identity:
        identity = await self.identity(team, user)
        if identity is None:
            raise NotLinked("connect your company account first")
        return identity

    # --- user tokens ---------------------------------------------------------------------------------

    async def user_token(self, team: str, user: str, audience: Audience) -> str:
        """An access token for `audience` issued to this person. Raises `TokenUnavailable` subclasses."""
        cached = await self._cached(
            self._token_key(team, user, audience), self._binding(team, user), audience
        )
        if cached is not None:
            return cached
        return (await self._refresh_locked(team, user, audience.resource, audience)).access_token

    async def invalidate(self, team: str, user: str, audience: Audience) -> None:
        """Forget the cached token (a server answered 401 to it)."""
        await self._redis.delete(self._token_key(team, user, audience))

    async def current_identity(
        self, team: str, user: str, *, max_age: float = GROUPS_MAX_AGE_SECONDS
    ) -> Identity:
        """The identity with groups no older than `max_age`, re-read through a refresh when needed."""
        identity = await self.require_identity(team, user)
        if self._clock() - identity.groups_at <= max_age:
            return identity
        if not identity.resources:
            raise ReconnectNeeded("your link has no servers to refresh groups with; connect again")
        await self._refresh_locked(team, user, identity.resources[0], None)
        return await self.require_identity(team, user)

    async def _refresh_locked(
        self, team: str, user: str, resource: str, audience: Audience | None
    ) -> _Issued:
        """Refresh for `resource` under the person's lock; the token is cached for `audience` (None: a
        refresh only to re-read groups, whose token is for no server in particular and is not kept)."""
        binding = self._binding(team, user)
        # A waiter gives up after one lease and one more token request: the holder is still working by then.
        wait = self._lock_seconds + TOKEN_REQUEST_TIMEOUT_SECONDS
        lock = self._redis.lock(
            f"chatops:lock:refresh:{team}:{user}", timeout=self._lock_seconds, blocking_timeout=wait
        )
        try:
            acquired = await lock.acquire()
        except LockError:
            acquired = False
        if not acquired:
            raise TokenUnavailable("the identity provider is slow to answer; try again in a moment")
        keeper = _keep_alive(lock, self._lock_seconds)
        try:
            if audience is not None:
                cached = await self._cached(self._token_key(team, user, audience), binding, audience)
                if cached is not None:  # another process refreshed while we waited for the lock
                    return _Issued(cached)
            identity = await self.require_identity(team, user)
            sealed = await self._redis.hget(self._link_key(team, user), "refresh")
            if sealed is None:
                raise ReconnectNeeded("your link has no refresh grant; connect again")
            try:
                refresh_token = self._sealer.open(_text(sealed), binding)
            except SealError:
                await self.unlink(team, user)
                raise ReconnectNeeded("your stored link could not be opened; connect again") from None
            try:
                issued = await self._provider.refresh(refresh_token, resource=resource)
            except LinkEnded as exc:
                await self.unlink(team, user)
                raise ReconnectNeeded(f"your link has ended ({exc.error}); connect again") from None
            except ProviderError as exc:
                raise TokenUnavailable(str(exc)) from None
            updates: dict[FieldT, EncodableT] = {}
            if issued.refresh_token:  # rotation: keep the newest; keep the old one when none came back
                updates["refresh"] = self._sealer.seal(issued.refresh_token, binding)
            else:  # ...under the first CHATOPS_SECRET_KEY, so a key being rotated out stops being needed
                updates["refresh"] = self._sealer.reseal(_text(sealed), binding)
            try:
                claims = await self._provider.verify(issued.access_token, audience=resource)
            except ProviderError as exc:
                if updates:
                    await self._redis.hset(self._link_key(team, user), mapping=updates)
                raise TokenUnavailable(f"the identity provider issued an unusable token ({exc})") from None
            if claims.sub != identity.sub:
                await self.unlink(team, user)
                raise ReconnectNeeded("the identity provider answered for a different person; connect again")
            updates["groups"] = json.dumps(sorted(claims.groups))
            updates["groups_at"] = repr(self._clock())
            await self._redis.hset(self._link_key(team, user), mapping=updates)
            if audience is not None:
                key = self._token_key(team, user, audience)
                await self._store(key, binding, audience, issued.access_token, claims.expires_at)
            return _Issued(issued.access_token)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            # The lock may have expired while we worked; the next caller re-checks the cache anyway.
            with contextlib.suppress(LockError):
                await lock.release()

    # --- service tokens ------------------------------------------------------------------------------

    async def service_token(self, audience: Audience) -> str:
        binding = Binding("_service", self._provider.client_id, self._provider.issuer)
        key = f"chatops:svc:{audience.digest}"
        cached = await self._cached(key, binding, audience)
        if cached is not None:
            return cached
        try:
            issued = await self._provider.client_credentials(resource=audience.resource)
            claims = await self._provider.verify(issued.access_token, audience=audience.resource)
        except ProviderError as exc:
            raise TokenUnavailable(f"the bot's service identity could not get a token ({exc})") from None
        await self._store(key, binding, audience, issued.access_token, claims.expires_at)
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
class _Issued:
    access_token: str


def _keep_alive(lock: Lock, seconds: float) -> asyncio.Task[None]:
    """Reset `lock`'s TTL every third of it until cancelled. The refresh it guards may outlast one TTL (a slow
    provider, discovery, fetching signing keys); had the lock lapsed, a second caller would refresh with the
    same refresh token, and a rotating provider would revoke the whole family."""

    async def extend() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            try:
                await lock.reacquire()
            except LockError:  # lost already (this loop was starved past the TTL): nothing left to keep
                log.warning("the refresh lock %s lapsed while its refresh was running", lock.name)
                return
            except RedisError as exc:  # the next try may get through; the TTL has slack for it
                log.warning("could not extend the refresh lock: %s", type(exc).__name__)

    return asyncio.create_task(extend(), name="refresh lock keep-alive")
