"""Servers with their own authorization server (`auth: oauth`, SPEC §5): the MCP authorization spec as a
client acting for many people, each of whom connects each such server once.

    url = await auth.authorization_url(team, user, "io.sentry/sentry", browser=cookie_secret)
    # the person's browser goes to `url`, signs in and consents; the authorization server sends it back to
    # PUBLIC_URL + CALLBACK_PATH with ?code&state(&iss):
    connected = await auth.finish(state, code, iss, browser=cookie_secret)
    token = await auth.token(team, user, entry)  # what the gateway sends to that server, and only there

- `authorization_url` discovers the server's authorization server (`server_oauth_discovery`), picks the
  bot's client there (`server_oauth_clients`), and returns the authorization request: PKCE S256, `resource`,
  and the scope the server asks for (its challenge's `scope`, else its `scopes_supported`, else none, plus
  `offline_access` when the authorization server lists it). The `state` is single-use, expires in 10
  minutes, and is bound to (team, user, server) and to the browser that started (the fingerprint of a
  secret the web layer keeps in a cookie), so a link someone else opens connects nobody.
- `finish` checks the browser and RFC 9207's `iss` (exact; required when the server advertises it), redeems
  the code with the same `resource`, and keeps the tokens sealed per person per server
  (`server_oauth_tokens`).
- `token` refreshes like the company's tokens: serialized per person and server, the newest refresh token
  kept, and a refused refresh ends the connection (the person is asked to connect again: `ConnectNeeded`).
- A 403 `insufficient_scope` is a step-up (`after_failure`, `server_oauth_scopes`): the next authorization
  asks for the union of what was asked before and what the server wants, a limited number of times.
- `service.token(entry)`: the bot's own token from a pre-registered client (client_credentials with
  `resource`), for callers without a person (workflows with `identity: service`).

Errors: see `server_oauth_errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx2
import redis.asyncio as aioredis
from redis.exceptions import LockError

from mcp_clients.connection import BearerFlow
from mcp_clients.egress import Resolver, outbound_client
from mcp_clients.provider import TOKEN_REQUEST_TIMEOUT_SECONDS, Pkce
from mcp_clients.sealing import Binding, Sealer, SealError
from mcp_clients.server_oauth_clients import CALLBACK_PATH, Client, ClientRegistry, client_metadata_url
from mcp_clients.server_oauth_discovery import Challenge, discover, supports_s256
from mcp_clients.server_oauth_errors import (
    ConnectFailed,
    ConnectNeeded,
    ServerAuthError,
    StepUpRefused,
)
from mcp_clients.server_oauth_revoke import Revoker
from mcp_clients.server_oauth_scopes import StepUps, select_scope
from mcp_clients.server_oauth_service import ServiceTokens
from mcp_clients.server_oauth_tokens import Grant, Stored, TokenRefused, TokenStore, request_token
from mcp_clients.tokens import Audience, TokenBroker, TokenUnavailable
from registry_cache.model import ServerEntry
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import Person

__all__ = ["CALLBACK_PATH", "Connected", "PerServerAuth", "audience_of"]

STATE_TTL_SECONDS = 600
LOCK_SECONDS = TOKEN_REQUEST_TIMEOUT_SECONDS + 5.0  # one token request is all a holder does


@dataclass(frozen=True)
class Connected:
    team: str
    user: str
    server: str
    short_name: str
    scope: str | None


def audience_of(entry: ServerEntry) -> Audience:
    return Audience(entry.name, entry.url, entry.resource)


def _fingerprint(browser: str) -> str:
    """What is kept of the browser's secret: enough to compare, useless to replay."""
    return hashlib.sha256(browser.encode()).hexdigest()


class PerServerAuth:
    def __init__(
        self,
        redis: aioredis.Redis,
        sealer: Sealer,
        *,
        public_url: str,
        http: httpx2.AsyncClient | None = None,
        resolver: Resolver | None = None,
        snapshot: SharedSnapshot | None = None,
        broker: TokenBroker | None = None,
        metadata_url: str | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._sealer = sealer
        # Every URL here comes from a server: the egress guard checks where each connection really goes.
        self._http = http or outbound_client(resolver=resolver, follow_redirects=False)
        self._owns_http = http is None
        self._snapshot = snapshot
        self._broker = broker
        self._clock = clock
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self.clients = ClientRegistry(
            redis,
            sealer,
            self._http,
            redirect_uri=self.redirect_uri,
            metadata_url=metadata_url or client_metadata_url(public_url),
            environ=environ,
        )
        self.store = TokenStore(redis, sealer)
        self.step_ups = StepUps(redis)
        self.service = ServiceTokens(self._http, self.clients, self.store, clock=clock)
        self.revoker = Revoker(self._http, self.clients, self.store)  # Disconnect, per person and server

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- connecting ----------------------------------------------------------------------------------

    async def authorization_url(self, team: str, user: str, server: str, *, browser: str) -> str:
        """Where to send this person's browser to connect `server` (a registry name or short name), for a
        person who may use it (the company's groups decide: linking comes first)."""
        return await self.authorize(team, user, await self._entry_for(team, user, server), browser=browser)

    async def authorize(self, team: str, user: str, entry: ServerEntry, *, browser: str) -> str:
        if entry.governance.auth != "oauth":
            raise ServerAuthError(f"{entry.short_name} is not connected per person")
        audience = audience_of(entry)
        want = await self.step_ups.wanted(team, user, audience)
        found = await discover(
            self._http, entry.url, challenge=want.challenge, resource=entry.governance.resource
        )
        if not supports_s256(found.metadata):
            raise ServerAuthError(
                f"{entry.short_name}'s authorization server does not support PKCE S256; not connecting"
            )
        if found.metadata.authorization_endpoint is None:
            raise ServerAuthError(
                f"{entry.short_name}'s authorization server names no authorization endpoint"
            )
        previous = await self.store.load(team, user, audience)
        scope = select_scope(found, want, previous.requested_scope if previous else None)
        client = await self.clients.client_for(entry, found)
        pkce, state = Pkce.new(), secrets.token_urlsafe(32)
        binding = Binding(team, user, found.issuer)
        private = {"verifier": pkce.verifier, "client": client.record()}
        record = {
            "team": team,
            "user": user,
            "server": entry.name,
            "short_name": entry.short_name,
            "url": entry.url,
            "entry_resource": entry.resource,
            "browser": _fingerprint(browser),
            "issuer": found.issuer,
            "iss_required": found.metadata.authorization_response_iss_parameter_supported,
            "resource": found.resource,
            "scope": scope,
            "step_up": want.scope is not None,
            "token_endpoint": found.metadata.token_endpoint,
            "revocation_endpoint": found.metadata.revocation_endpoint,
            "sealed": self._sealer.seal(json.dumps(private), binding, purpose="server-oauth-state"),
        }
        await self._redis.set(f"chatops:srvstate:{state}", json.dumps(record), ex=STATE_TTL_SECONDS)
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("response_type", "code"),
            ("client_id", client.credentials.client_id),
            ("redirect_uri", self.redirect_uri),
            ("state", state),
            ("code_challenge", pkce.challenge),
            ("code_challenge_method", "S256"),
            ("resource", found.resource),
        ]
        if scope:
            params.append(("scope", scope))
        return str(httpx2.URL(found.metadata.authorization_endpoint).copy_merge_params(params))

    async def finish(
        self,
        state: str | None,
        code: str | None,
        iss: str | None,
        *,
        browser: str | None,
        error: str | None = None,
    ) -> Connected:
        """The browser came back to the callback: keep this person's tokens for the server it was for."""
        raw = await self._redis.getdel(f"chatops:srvstate:{state}") if state else None
        if raw is None:
            raise ConnectFailed(
                "This connection has expired or was already used. Start again from Slack.",
                reason="state_unknown",
            )
        record = json.loads(raw)
        team, user, server = str(record["team"]), str(record["user"]), str(record["server"])

        def failed(message: str, reason: str) -> ConnectFailed:
            return ConnectFailed(message, reason=reason, team=team, user=user, server=server)

        if not browser or not hmac.compare_digest(_fingerprint(browser), str(record["browser"])):
            raise failed(
                "This connection was not started in this browser, so it connects nobody. Open the "
                "Connect button in Slack again, in the browser you sign in with.",
                "browser_mismatch",
            )
        if iss is None and record["iss_required"]:
            raise failed("The answer did not say which authorization server sent it.", "iss_missing")
        if iss is not None and iss != record["issuer"]:  # RFC 9207: a mix-up, compared exactly
            raise failed("The answer came from an unexpected authorization server.", "iss_mismatch")
        if error:
            raise failed(f"The server's sign-in did not connect it ({error[:80]}).", "denied")
        if not code:
            raise failed("The answer is missing its code. Start again from Slack.", "code_missing")
        binding = Binding(team, user, str(record["issuer"]))
        try:
            private = json.loads(self._sealer.open(record["sealed"], binding, purpose="server-oauth-state"))
            client = self.clients.restore(private["client"])
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": str(private["verifier"]),
                "resource": str(record["resource"]),
            }
            grant = await request_token(
                self._http, str(record["token_endpoint"]), form, client.credentials, issuer=record["issuer"]
            )
        except (SealError, ServerAuthError) as exc:
            raise failed(
                f"{record['short_name']} could not be connected ({exc}).", "exchange_failed"
            ) from None
        audience = Audience(server, str(record["url"]), str(record["entry_resource"]))
        await self.store.save(team, user, audience, self._stored(grant, record, client))
        if record["step_up"]:
            await self.step_ups.granted(team, user, audience)
        return Connected(team, user, server, str(record["short_name"]), record["scope"])

    @staticmethod
    def _stored(grant: Grant, record: Mapping[str, Any], client: Client) -> Stored:
        return Stored(
            access_token=grant.access_token,
            expires_at=grant.expires_at,
            refresh_token=grant.refresh_token,
            requested_scope=str(record.get("scope") or ""),
            resource=str(record["resource"]),
            issuer=str(record["issuer"]),
            token_endpoint=str(record["token_endpoint"]),
            revocation_endpoint=record.get("revocation_endpoint"),
            client=client.record(),
            url=str(record["url"]),
        )

    # --- using ---------------------------------------------------------------------------------------

    async def connected(self, team: str, user: str, entry: ServerEntry) -> bool:
        return await self.store.load(team, user, audience_of(entry)) is not None

    async def token(self, team: str, user: str, entry: ServerEntry) -> str:
        """This person's access token for `entry`, refreshed when due. Raises `ConnectNeeded` when there is
        none (or it ended), `ServerAuthError` when the authorization server cannot be used right now."""
        audience = audience_of(entry)
        stored = await self.store.load(team, user, audience)
        if stored is None:
            raise ConnectNeeded(entry.name, entry.short_name)
        if stored.fresh(self._clock()):
            return stored.access_token
        return await self._refresh(team, user, entry, audience)

    async def _refresh(self, team: str, user: str, entry: ServerEntry, audience: Audience) -> str:
        lock = self._redis.lock(
            f"chatops:lock:srvrefresh:{team}:{user}:{audience.digest}",
            timeout=LOCK_SECONDS,
            blocking_timeout=LOCK_SECONDS + TOKEN_REQUEST_TIMEOUT_SECONDS,
        )
        try:
            acquired = await lock.acquire()
        except LockError:
            acquired = False
        if not acquired:
            raise ServerAuthError(f"{entry.short_name}'s authorization server is slow to answer; try again")
        try:
            stored = await self.store.load(team, user, audience)  # another process may have refreshed
            if stored is None:
                raise ConnectNeeded(entry.name, entry.short_name)
            if stored.fresh(self._clock()):
                return stored.access_token
            if stored.refresh_token is None:
                await self.store.forget(team, user, audience)
                raise ConnectNeeded(entry.name, entry.short_name, why="your access to it expired")
            client = self.clients.restore(stored.client)
            form = {"grant_type": "refresh_token", "refresh_token": stored.refresh_token}
            form["resource"] = stored.resource
            try:
                grant = await request_token(
                    self._http, stored.token_endpoint, form, client.credentials, issuer=stored.issuer
                )
            except TokenRefused as exc:
                if not exc.ended:
                    raise
                await self.store.forget(team, user, audience)
                raise ConnectNeeded(entry.name, entry.short_name, why="its authorization ended") from None
            kept = replace(
                stored,
                access_token=grant.access_token,
                expires_at=grant.expires_at,
                # Rotation: the newest refresh token; the one we had when none came back.
                refresh_token=grant.refresh_token or stored.refresh_token,
            )
            await self.store.save(team, user, audience, kept)
            return kept.access_token
        finally:
            # Expired while we worked: the next caller re-reads the store anyway.
            with contextlib.suppress(LockError):
                await lock.release()

    async def invalidate(self, team: str, user: str, entry: ServerEntry) -> None:
        """The server answered 401 to the access token: the next `token()` refreshes (or asks to connect)."""
        audience = audience_of(entry)
        stored = await self.store.load(team, user, audience)
        if stored is None:
            return
        if stored.refresh_token is None:
            await self.store.forget(team, user, audience)
        else:
            await self.store.save(team, user, audience, replace(stored, expires_at=0.0))

    def bearer_flow(self, team: str, user: str, entry: ServerEntry) -> BearerFlow:
        """The auth flow of a connection to `entry` for this person: their token for it, and nothing else."""

        async def token() -> str | None:
            return await self.token(team, user, entry)

        async def invalidate() -> None:
            await self.invalidate(team, user, entry)

        return BearerFlow(token, invalidate)

    async def after_failure(
        self, team: str, user: str, entry: ServerEntry, flow: BearerFlow
    ) -> TokenUnavailable | None:
        """What a failed connection or call on `flow` means for the person: connect (again), grant more access
        (`step_up`), or that the server keeps asking for more (`StepUpRefused`); None when it was not auth."""
        if flow.token_error is not None:
            return flow.token_error
        if flow.insufficient_scope:
            challenge = Challenge.parse(403, flow.insufficient_scope)
            if challenge is not None:
                try:
                    return await self.step_up(team, user, entry, challenge)
                except StepUpRefused as exc:
                    return exc
        if flow.last_status == 401:  # even a refreshed token was refused: it is of no use any more
            await self.store.forget(team, user, audience_of(entry))
            return ConnectNeeded(entry.name, entry.short_name, why="it no longer accepts your connection")
        return None

    async def step_up(self, team: str, user: str, entry: ServerEntry, challenge: Challenge) -> ConnectNeeded:
        """The server wants more scope than this person's token has: ask them to grant it (`StepUpRefused`
        past the limit)."""
        wanted = await self.step_ups.record(team, user, audience_of(entry), challenge, entry.short_name)
        return ConnectNeeded(
            entry.name, entry.short_name, step_up=True, why=f"it asks for {wanted or 'more'}"
        )

    async def _entry_for(self, team: str, user: str, server: str) -> ServerEntry:
        if self._snapshot is None or self._broker is None:
            raise ServerAuthError("this bot cannot connect servers by name (no registry)")
        try:
            view = await self._snapshot.view()
        except RegistryUnavailable as exc:
            raise ServerAuthError(str(exc)) from None
        entry = view.server(server)
        if entry is None or entry.governance.auth != "oauth":
            raise ServerAuthError(f"{server} is not a server you connect yourself")
        identity = await self._broker.require_identity(team, user)
        # Connecting is not tied to a channel: ask as if in one where the server's tools exist.
        channel = next(iter(entry.governance.allowed_channels), None)
        access = view.access(Person(identity.sub, identity.email, identity.groups), entry, channel)
        if not access.allowed:
            raise ServerAuthError(access.reason)
        return entry
