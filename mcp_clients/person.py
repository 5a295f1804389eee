"""Who a token response was issued for: `sub`, email and groups, wherever the provider put them (SPEC §5).

Sources, in this order; for each claim the first source that carries it wins:
1. the ID token, verified (signature, issuer, audience = the bot's client id, and the nonce at linking);
2. the userinfo endpoint, when a claim is still missing. It is asked with an access token the provider will
   take there: one requested without `resource`, since certified providers refuse a resource server's token
   at userinfo. When the tokens at hand were requested for a server, one refresh without `resource` gets
   such a token first (and, with it, usually a fresh ID token);
3. a JWT access token, verified, when a claim is still missing (some providers put groups only there). One
   that does not verify (Entra ID's Graph tokens cannot be) is simply not a source.
Every source must name the same `sub`, or nobody is believed. Without a verifiable ID token and without a
userinfo endpoint nobody can be identified, and linking says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_clients.provider import Claims, Provider, ProviderError, TokenResponse, is_jwt

__all__ = ["Identified", "identify"]


@dataclass(frozen=True)
class Identified:
    claims: Claims
    refresh_token: str | None  # the one to keep: rotated when a refresh was made here


async def identify(
    provider: Provider, tokens: TokenResponse, *, nonce: str | None = None, for_provider: bool
) -> Identified:
    """The person `tokens` speak for. `for_provider`: the access token was requested without a resource
    (so userinfo takes it). Raises `ProviderError`."""
    sources: list[Mapping[str, Any]] = []
    refresh_token = tokens.refresh_token
    verifiable = await provider.can_verify()
    if verifiable and tokens.id_token:
        sources.append(await provider.verified(tokens.id_token, audience=provider.client_id, nonce=nonce))
    if _lacking(provider, sources) and (await provider.metadata()).userinfo_endpoint:
        holder = tokens
        if not for_provider and tokens.refresh_token:
            holder = await provider.refresh(tokens.refresh_token)
            refresh_token = holder.refresh_token or refresh_token
            if verifiable and holder.id_token:
                sources.append(await provider.verified(holder.id_token, audience=provider.client_id))
        if _lacking(provider, sources):
            sources.append(await provider.userinfo(holder.access_token))
    if _lacking(provider, sources) and verifiable and is_jwt(tokens.access_token):
        with contextlib.suppress(ProviderError):  # not one of the provider's own JWTs: it is no source
            sources.append(await provider.verified(tokens.access_token))
    return Identified(_combined(provider, sources, tokens.expires_at), refresh_token)


def _lacking(provider: Provider, sources: list[Mapping[str, Any]]) -> bool:
    paths = provider.claims
    return (
        not sources
        or all(paths.email_in(s) is None for s in sources)
        or all(paths.groups_in(s) is None for s in sources)
    )


def _combined(provider: Provider, sources: list[Mapping[str, Any]], expires_at: float) -> Claims:
    if not sources:
        raise ProviderError(
            "the identity provider said nothing the bot can verify about who signed in "
            "(no ID token it can check and no userinfo endpoint)"
        )
    subs = {str(s.get("sub")) for s in sources}
    if len(subs) > 1:
        raise ProviderError("the identity provider's answers name different people")
    paths = provider.claims
    email_source = next((s for s in sources if paths.email_in(s) is not None), None)
    groups = next((g for s in sources if (g := paths.groups_in(s)) is not None), None)
    raw: dict[str, Any] = {}
    for source in reversed(sources):  # earlier sources win
        raw.update(source)
    # An address is only as verified as the source that gave it says.
    raw.pop("email_verified", None)
    if email_source is not None and "email_verified" in email_source:
        raw["email_verified"] = email_source["email_verified"]
    return Claims(
        sub=subs.pop(),
        email=paths.email_in(email_source) or "" if email_source is not None else "",
        groups=groups or frozenset(),
        expires_at=expires_at,
        raw=raw,
        has_groups=groups is not None,
    )
