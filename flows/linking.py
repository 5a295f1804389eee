"""Account linking: a Slack user connects their company identity once (SPEC §5 "Account linking").

1. `offer()` mints a start link for one (team, user), valid 10 minutes, handed to that person ephemerally.
2. `start()` (GET /oauth/start/<offer>) creates a single-use `state` bound server-side to the offer's person
   and to the browser (the fingerprint of a secret the web layer puts in a cookie), a PKCE S256 verifier and
   an OIDC nonce, and redirects to the provider asking for `offline_access` with `prompt=consent` and one
   `resource` per usable `auth: user` server whose tokens are asked by resource (strict providers grant
   refreshes only for resources asked here), with OAUTH_SCOPES (by default the base scopes plus a groups
   scope the provider lists).
3. `finish()` (GET /oauth/callback) consumes the state, checks the browser and `iss` (RFC 9207: exact, and
   required when the provider advertises it), exchanges the code naming exactly one resource, learns who
   signed in (`mcp_clients.person`: the verified ID token, userinfo for what it lacks, OAUTH_EMAIL_CLAIM and
   OAUTH_GROUPS_CLAIM wherever they are), then makes sure the person who signed in is the Slack user:
   - OAUTH_MATCH_EMAIL=true (default): the signed-in email must equal the Slack profile's, ignoring case;
   - false: nothing is linked yet; the sign-in is held (flows.link_confirm) until `confirm()`, a POST from the
     same browser with the confirmation page's own CSRF token.
   The code exchange's access token is never used to call a server.

A login CSRF (someone else's sign-in landing on this Slack user) is refused with `LinkDenied`, which the web
layer audits. Nothing secret is logged or shown: pages say what happened in plain words.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.utils import str_if_bytes

from flows.link_confirm import Confirmation, Held, NotConfirmable, PendingLinks, fingerprint, matches
from flows.people import People, PeopleUnavailable, SlackPerson
from mcp_clients.person import identify
from mcp_clients.provider import Claims, Pkce, Provider, ProviderError
from mcp_clients.sealing import Sealer
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot

__all__ = ["Confirmation", "LinkDenied", "LinkFailed", "LinkResult", "Linking", "signed_in_email"]

log = logging.getLogger(__name__)

OFFER_TTL_SECONDS = 600
STATE_TTL_SECONDS = 600


class LinkFailed(Exception):
    """Linking did not complete; the message is shown on the page."""


class LinkDenied(LinkFailed):
    """A sign-in refused because it may not be this Slack user's own: audited as account_link denied."""

    def __init__(self, message: str, *, team: str, user: str, reason: str, sub: str = "") -> None:
        super().__init__(message)
        self.team = team
        self.user = user
        self.sub = sub
        self.reason = reason  # a short code for the audit (browser_mismatch, email_mismatch, ...)


@dataclass(frozen=True)
class LinkResult:
    identity: Identity
    offer: str
    waiting: tuple[str, ...]  # ids of requests that were waiting for this link


OnLinked = Callable[[LinkResult], Awaitable[None]]

OTHER_BROWSER = (
    "This sign-in was not started in this browser (or a newer Connect link was opened here since), so it "
    "cannot connect anyone. Open the Connect link from Slack again, in the browser you sign in with."
)
CONFIRM_REFUSED = {
    "expired": "This confirmation has expired or was already used. Start again from Slack.",
    "browser": "This confirmation was not opened in this browser. Start again from Slack, in one browser.",
    "csrf": "This confirmation did not come from the page the bot showed you. Start again from Slack.",
}


def signed_in_email(claims: Claims) -> str:
    """The email the provider vouches for (OAUTH_EMAIL_CLAIM, read in one place: `Claims.email`); "" when it
    gives none or says it is unverified, since an unverified address proves nothing about the person."""
    if claims.raw.get("email_verified") is False:
        return ""
    return claims.email.strip()


class Linking:
    def __init__(
        self,
        redis: aioredis.Redis,
        provider: Provider,
        broker: TokenBroker,
        snapshot: SharedSnapshot,
        *,
        people: People,
        sealer: Sealer,
        public_url: str,
        match_email: bool = True,
        on_linked: OnLinked | None = None,
    ) -> None:
        self._redis = redis
        self._provider = provider
        self._broker = broker
        self._snapshot = snapshot
        self._people = people
        self._pending = PendingLinks(redis, sealer, provider.issuer)
        self._public_url = public_url.rstrip("/")
        self._match_email = match_email
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
            # Servers whose tokens come by `scope` or `exchange` need no resource granted here (SPEC §5).
            if entry.usable and entry.governance.auth == "user" and entry.governance.token == "resource":
                seen.setdefault(entry.resource)
        return list(seen)

    async def start(self, offer: str, *, browser: str) -> str:
        """Return the provider's authorization URL for this offer, bound to the browser holding `browser`."""
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
        try:
            issuer = (await self._provider.metadata()).issuer
            url = await self._provider.authorization_url(
                redirect_uri=self.redirect_uri, state=state, nonce=nonce, pkce=pkce, resources=resources
            )
        except ProviderError as exc:
            raise LinkFailed(f"The identity provider is not reachable right now ({exc}).") from None
        record = {
            **who,
            "offer": offer,
            "verifier": pkce.verifier,
            "nonce": nonce,
            "resources": resources,
            "issuer": issuer,  # RFC 9207: the issuer this request went to is the one that must answer
            "browser": fingerprint(browser),
        }
        await self._redis.set(f"chatops:oauthstate:{state}", json.dumps(record), ex=STATE_TTL_SECONDS)
        return url

    async def finish(
        self,
        *,
        state: str | None,
        code: str | None,
        iss: str | None,
        error: str | None,
        browser: str | None,
    ) -> LinkResult | Confirmation:
        """Link the person, or (OAUTH_MATCH_EMAIL=false) hold the sign-in for them to confirm."""
        if not state:
            raise LinkFailed("The sign-in answer is missing its state. Start again from Slack.")
        raw = await self._redis.getdel(f"chatops:oauthstate:{state}")
        if raw is None:
            raise LinkFailed("This sign-in has expired or was already used. Start again from Slack.")
        record = json.loads(raw)
        team, user = str(record["team"]), str(record["user"])
        if not matches(browser, str(record.get("browser", ""))):
            raise LinkDenied(OTHER_BROWSER, team=team, user=user, reason="browser_mismatch")
        await self._check_issuer(iss, record)
        if error:
            raise LinkFailed(f"The identity provider did not connect your account ({error[:80]}).")
        if not code:
            raise LinkFailed("The sign-in answer is missing its code. Start again from Slack.")
        held = await self._redeem(code, record)
        person = await self._slack_person(user)
        email = signed_in_email(held.claims)
        if not self._match_email:
            return await self._pending.hold(
                held, browser=browser, person=person, signed_in_as=email or held.claims.sub
            )
        self._require_same_person(email, person, held)
        return await self._complete(held)

    async def confirm(self, *, pending: str, csrf: str | None, browser: str | None) -> LinkResult:
        """The person said yes on the confirmation page (OAUTH_MATCH_EMAIL=false)."""
        try:
            held = await self._pending.take(pending, csrf=csrf, browser=browser)
        except NotConfirmable as exc:
            message = CONFIRM_REFUSED[exc.reason]
            if exc.reason == "expired":
                raise LinkFailed(message) from None
            raise LinkDenied(message, team=exc.team, user=exc.user, reason=f"confirm_{exc.reason}") from None
        return await self._complete(held)

    async def _check_issuer(self, iss: str | None, record: dict[str, Any]) -> None:
        try:
            meta = await self._provider.metadata()
        except ProviderError as exc:
            raise LinkFailed(f"The identity provider is not reachable right now ({exc}).") from None
        team, user = str(record["team"]), str(record["user"])
        if iss is None:
            if meta.authorization_response_iss_parameter_supported:
                raise LinkDenied(
                    "The sign-in answer did not say which identity provider sent it. Start again from Slack.",
                    team=team,
                    user=user,
                    reason="iss_missing",
                )
        elif iss != record.get("issuer", meta.issuer):
            # RFC 9207: an answer that names another issuer is a mix-up attack, not a sign-in; compared
            # exactly, as the RFC says (a trailing slash is another issuer).
            raise LinkDenied(
                "The sign-in answer came from an unexpected identity provider.",
                team=team,
                user=user,
                reason="iss_mismatch",
            )

    async def _redeem(self, code: str, record: dict[str, Any]) -> Held:
        resources = [str(r) for r in record["resources"]]
        try:
            tokens = await self._provider.exchange_code(
                code,
                redirect_uri=self.redirect_uri,
                verifier=str(record["verifier"]),
                resource=resources[0] if resources else None,
            )
            # Without a resource the exchange's token is one for the provider itself (userinfo takes it).
            who = await identify(
                self._provider, tokens, nonce=str(record["nonce"]), for_provider=not resources
            )
        except ProviderError as exc:
            raise LinkFailed(f"Your account could not be connected ({exc}).") from None
        team, user, offer = str(record["team"]), str(record["user"]), str(record["offer"])
        return Held(team, user, offer, resources, who.claims, who.refresh_token)

    async def _slack_person(self, user: str) -> SlackPerson:
        try:
            return await self._people.person(user)
        except PeopleUnavailable as exc:
            if self._match_email:  # without Slack's word there is nothing to compare the email with
                raise LinkFailed(
                    "Slack could not be asked who you are right now, so the bot cannot confirm it is you. "
                    "Try again from Slack in a minute."
                ) from None
            log.warning("linking %s without a Slack name: %s", user, exc)
            return SlackPerson(user, user, "")

    @staticmethod
    def _require_same_person(email: str, person: SlackPerson, held: Held) -> None:
        def refuse(message: str, reason: str) -> LinkDenied:
            return LinkDenied(message, team=held.team, user=held.user, sub=held.claims.sub, reason=reason)

        if not person.email:
            raise refuse(
                "Your Slack profile shows no email address, so the bot cannot confirm that the account you "
                "signed in with is yours. Ask your Slack admin to let the bot see profile emails "
                "(users:read.email).",
                "slack_email_missing",
            )
        if not email:
            raise refuse(
                "The identity provider did not say which (verified) email you signed in with, so the bot "
                "cannot confirm that this account is yours.",
                "idp_email_missing",
            )
        if email.casefold() != person.email.casefold():
            raise refuse(
                f"You signed in as {email}, but this Connect link was made for a Slack user with another "
                "email address. Nothing was connected. Sign in as that Slack user's own account, or ask "
                "them to connect it themselves.",
                "email_mismatch",
            )

    async def _complete(self, held: Held) -> LinkResult:
        team, user = held.team, held.user
        identity = await self._broker.link(
            team, user, claims=held.claims, refresh_token=held.refresh_token, resources=held.resources
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(f"chatops:linkoffer:waiting:{team}:{user}", 0, -1)
            pipe.delete(f"chatops:linkoffer:waiting:{team}:{user}")
            pipe.delete(f"chatops:linkoffer:{held.offer}", f"chatops:linkoffer:user:{team}:{user}")
            waiting_raw, *_ = await pipe.execute()
        waiting = tuple(str_if_bytes(w) for w in waiting_raw)
        result = LinkResult(identity, held.offer, waiting)
        if not held.refresh_token:
            log.warning("link for %s has no refresh token: the provider did not grant offline_access", user)
        if self._on_linked is not None:
            await self._on_linked(result)
        return result
