"""Account linking: a Slack user connects their company identity once (SPEC §5 "Account linking").

1. `offer()` mints a start link for one (team, user), valid 10 minutes, handed to that person ephemerally.
2. `start()` (GET /oauth/start/<offer>) creates a single-use `state` bound server-side to the offer's person,
   a PKCE S256 verifier and an OIDC nonce, and redirects to the provider asking for `offline_access` with
   `prompt=consent` and one `resource` per usable `auth: user` server (strict providers grant refreshes only
   for resources requested here).
3. `finish()` (GET /oauth/callback) consumes the state, checks `iss` (RFC 9207), exchanges the code naming
   exactly one resource, verifies the ID token (signature, issuer, audience, nonce) and stores the link.
   The code exchange's access token is never used to call a server.

Nothing secret is logged or shown: pages say what happened in plain words.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from mcp_clients.provider import Pkce, Provider, ProviderError
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot

__all__ = ["LinkFailed", "LinkResult", "Linking"]

log = logging.getLogger(__name__)

OFFER_TTL_SECONDS = 600
STATE_TTL_SECONDS = 600


class LinkFailed(Exception):
    """Linking did not complete; the message is shown on the page."""


@dataclass(frozen=True)
class LinkResult:
    identity: Identity
    offer: str
    waiting: tuple[str, ...]  # ids of requests that were waiting for this link


OnLinked = Callable[[LinkResult], Awaitable[None]]


class Linking:
    def __init__(
        self,
        redis: aioredis.Redis,
        provider: Provider,
        broker: TokenBroker,
        snapshot: SharedSnapshot,
        *,
        public_url: str,
        on_linked: OnLinked | None = None,
    ) -> None:
        self._redis = redis
        self._provider = provider
        self._broker = broker
        self._snapshot = snapshot
        self._public_url = public_url.rstrip("/")
        self._on_linked = on_linked

    @property
    def redirect_uri(self) -> str:
        return f"{self._public_url}/oauth/callback"

    async def offer(self, team: str, user: str, *, waiting: str | None = None) -> str:
        """The Connect link for this person. A request id in `waiting` is answered once they link."""
        key_by_user = f"chatops:linkoffer:user:{team}:{user}"
        existing = await self._redis.get(key_by_user)
        offer = existing.decode() if isinstance(existing, bytes) else existing
        if not offer or not await self._redis.exists(f"chatops:linkoffer:{offer}"):
            offer = secrets.token_urlsafe(24)
            data = json.dumps({"team": team, "user": user})
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"chatops:linkoffer:{offer}", data, ex=OFFER_TTL_SECONDS)
                pipe.set(key_by_user, offer, ex=OFFER_TTL_SECONDS)
                await pipe.execute()
        if waiting:
            waiting_key = f"chatops:linkoffer:waiting:{team}:{user}"
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(waiting_key, waiting)
                pipe.expire(waiting_key, OFFER_TTL_SECONDS * 3)
                await pipe.execute()
        return f"{self._public_url}/oauth/start/{offer}"

    async def _resources(self) -> list[str]:
        try:
            view = await self._snapshot.view()
        except RegistryUnavailable as exc:
            raise LinkFailed(str(exc)) from None
        seen: dict[str, None] = {}
        for entry in view.entries:
            if entry.usable and entry.governance.auth == "user":
                seen.setdefault(entry.resource)
        return list(seen)

    async def start(self, offer: str) -> str:
        """Return the provider's authorization URL for this offer."""
        raw = await self._redis.get(f"chatops:linkoffer:{offer}")
        if raw is None:
            raise LinkFailed(
                "This connect link has expired. Mention the bot in Slack again to get a new one."
            )
        who = json.loads(raw)
        resources = await self._resources()
        pkce = Pkce.new()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(16)
        record = {**who, "offer": offer, "verifier": pkce.verifier, "nonce": nonce, "resources": resources}
        await self._redis.set(f"chatops:oauthstate:{state}", json.dumps(record), ex=STATE_TTL_SECONDS)
        try:
            return await self._provider.authorization_url(
                redirect_uri=self.redirect_uri, state=state, nonce=nonce, pkce=pkce, resources=resources
            )
        except ProviderError as exc:
            raise LinkFailed(f"The identity provider is not reachable right now ({exc}).") from None

    async def finish(
        self, *, state: str | None, code: str | None, iss: str | None, error: str | None
    ) -> LinkResult:
        if not state:
            raise LinkFailed("The sign-in answer is missing its state. Start again from Slack.")
        raw = await self._redis.getdel(f"chatops:oauthstate:{state}")
        if raw is None:
            raise LinkFailed("This sign-in has expired or was already used. Start again from Slack.")
        record = json.loads(raw)
        if error:
            raise LinkFailed(f"The identity provider did not connect your account ({error[:80]}).")
        meta = await self._provider.metadata()
        if iss is not None and iss.rstrip("/") != meta.issuer.rstrip("/"):
            # RFC 9207: an answer that names another issuer is a mix-up attack, not a sign-in.
            raise LinkFailed("The sign-in answer came from an unexpected identity provider.")
        if not code:
            raise LinkFailed("The sign-in answer is missing its code. Start again from Slack.")
        resources: list[str] = record["resources"]
        try:
            tokens = await self._provider.exchange_code(
                code,
                redirect_uri=self.redirect_uri,
                verifier=record["verifier"],
                resource=resources[0] if resources else None,
            )
            if not tokens.id_token:
                raise LinkFailed("The identity provider did not return an ID token.")
            claims = await self._provider.verify(
                tokens.id_token, audience=self._provider.client_id, nonce=record["nonce"]
            )
        except ProviderError as exc:
            raise LinkFailed(f"Your account could not be connected ({exc}).") from None
        team, user = record["team"], record["user"]
        identity = await self._broker.link(
            team, user, claims=claims, refresh_token=tokens.refresh_token, resources=resources
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(f"chatops:linkoffer:waiting:{team}:{user}", 0, -1)
            pipe.delete(f"chatops:linkoffer:waiting:{team}:{user}")
            pipe.delete(f"chatops:linkoffer:{record['offer']}", f"chatops:linkoffer:user:{team}:{user}")
            waiting_raw, *_ = await pipe.execute()
        waiting = tuple(w.decode() if isinstance(w, bytes) else str(w) for w in waiting_raw)
        result = LinkResult(identity, record["offer"], waiting)
        if not tokens.refresh_token:
            log.warning("link for %s has no refresh token: the provider did not grant offline_access", user)
        if self._on_linked is not None:
            await self._on_linked(result)
        return result
