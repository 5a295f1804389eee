"""What ties a sign-in to one browser, and sign-ins held until their person confirms them (SPEC §5).

Browser binding (RFC 9700 §4.7): `/oauth/start` gives the browser a random secret in a cookie and keeps only
its sha256 in the server-side `state`; the callback must come back with the same secret. A Connect link
finished in another browser (a forwarded authorization URL, an attacker's login) therefore links nobody.

With OAUTH_MATCH_EMAIL=false the callback links nothing yet: the code exchange's result is held here, sealed
and for a few minutes, and the page asks the person to confirm. Only a POST carrying the page's own CSRF
token, from the same browser, takes it (once). Errors are `NotConfirmable` with a reason code; the caller
turns them into the words a person reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeGuard

import redis.asyncio as aioredis

from flows.people import SlackPerson
from mcp_clients.provider import Claims
from mcp_clients.sealing import Binding, Sealer, SealError

__all__ = [
    "CONFIRM_TTL_SECONDS",
    "Confirmation",
    "Held",
    "NotConfirmable",
    "PendingLinks",
    "fingerprint",
    "matches",
    "new_browser_secret",
]

CONFIRM_TTL_SECONDS = 300
_PURPOSE = "link-confirm"


def new_browser_secret() -> str:
    return secrets.token_urlsafe(32)


def fingerprint(secret: str) -> str:
    """What the server keeps of a browser secret or a CSRF token: enough to compare, useless to replay."""
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str | None, expected: str) -> TypeGuard[str]:
    """Whether `secret` is the one whose fingerprint is `expected` (in constant time)."""
    return secret is not None and secret != "" and hmac.compare_digest(fingerprint(secret), expected)


class NotConfirmable(Exception):
    def __init__(
        self, reason: Literal["expired", "browser", "csrf"], *, team: str = "", user: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.team = team
        self.user = user


@dataclass(frozen=True)
class Held:
    """A verified sign-in that is not a link yet."""

    team: str
    user: str
    offer: str
    resources: Sequence[str]
    claims: Claims
    refresh_token: str | None


@dataclass(frozen=True)
class Confirmation:
    """The page's question: link Slack user `slack_name` to `signed_in_as`? and what its form carries."""

    pending: str
    csrf: str
    slack_name: str
    signed_in_as: str


class PendingLinks:
    def __init__(self, redis: aioredis.Redis, sealer: Sealer, issuer: str) -> None:
        self._redis = redis
        self._sealer = sealer
        self._issuer = issuer

    @staticmethod
    def _key(pending: str) -> str:
        return f"chatops:linkconfirm:{pending}"

    async def hold(self, held: Held, *, browser: str, person: SlackPerson, signed_in_as: str) -> Confirmation:
        pending, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        claims = held.claims
        secret = {
            "offer": held.offer,
            "resources": list(held.resources),
            "refresh_token": held.refresh_token,
            "claims": {
                "sub": claims.sub,
                "email": claims.email,
                "groups": sorted(claims.groups),
                "expires_at": claims.expires_at,
                "raw": dict(claims.raw),
            },
        }
        record = {
            "team": held.team,
            "user": held.user,
            "browser": fingerprint(browser),
            "csrf": fingerprint(csrf),
            "sealed": self._sealer.seal(json.dumps(secret), self._binding(held.team, held.user), _PURPOSE),
        }
        await self._redis.set(self._key(pending), json.dumps(record), ex=CONFIRM_TTL_SECONDS)
        return Confirmation(pending, csrf, person.name, signed_in_as)

    async def take(self, pending: str, *, csrf: str | None, browser: str | None) -> Held:
        """The held sign-in, once, if this browser sends this page's token; wrong tries leave it in place."""
        raw = await self._redis.get(self._key(pending)) if pending else None
        if raw is None:
            raise NotConfirmable("expired")
        record = json.loads(raw)
        team, user = str(record["team"]), str(record["user"])
        if not matches(browser, record["browser"]):
            raise NotConfirmable("browser", team=team, user=user)
        if not matches(csrf, record["csrf"]):
            raise NotConfirmable("csrf", team=team, user=user)
        if await self._redis.getdel(self._key(pending)) != raw:
            raise NotConfirmable("expired")  # a concurrent confirm took it first
        try:
            secret = json.loads(self._sealer.open(record["sealed"], self._binding(team, user), _PURPOSE))
        except SealError:
            raise NotConfirmable("expired", team=team, user=user) from None
        c = secret["claims"]
        claims = Claims(
            sub=str(c["sub"]),
            email=str(c["email"]),
            groups=frozenset(c["groups"]),
            expires_at=float(c["expires_at"]),
            raw=c["raw"],
        )
        return Held(team, user, secret["offer"], secret["resources"], claims, secret["refresh_token"])

    def _binding(self, team: str, user: str) -> Binding:
        return Binding(team, user, self._issuer)
