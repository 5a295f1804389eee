"""Disconnecting one person from one `auth: oauth` server (SPEC §5 "Disconnect"): the sealed tokens are
forgotten first (nothing can use them from then on, whatever the authorization server says), then the
refresh token is revoked there (RFC 7009) when its metadata advertised a `revocation_endpoint`, authenticated
as the client that obtained it. Revoking a refresh token ends the access tokens issued from it at servers
that follow the RFC's advice; an access token alone (no refresh token) is revoked instead.
"""

from __future__ import annotations

import httpx2

from mcp_clients.server_oauth_clients import ClientRegistry
from mcp_clients.server_oauth_errors import ServerAuthError
from mcp_clients.server_oauth_tokens import TokenStore, post_token
from mcp_clients.tokens import Audience, Revocation

__all__ = ["Revoker"]


class Revoker:
    def __init__(self, http: httpx2.AsyncClient, clients: ClientRegistry, store: TokenStore) -> None:
        self._http = http
        self._clients = clients
        self._store = store

    async def disconnect(self, team: str, user: str, audience: Audience) -> Revocation:
        """Forget this person's tokens for `audience`, then revoke them at its authorization server."""
        stored = await self._store.load(team, user, audience)
        await self._store.forget(team, user, audience)
        if stored is None:
            return "nothing"
        if stored.revocation_endpoint is None:
            return "unsupported"
        token, hint = (
            (stored.refresh_token, "refresh_token")
            if stored.refresh_token
            else (stored.access_token, "access_token")
        )
        try:
            client = self._clients.restore(stored.client)
            await post_token(
                self._http,
                stored.revocation_endpoint,
                {"token": token, "token_type_hint": hint},
                client.credentials,
                issuer=stored.issuer,
            )
        except ServerAuthError:  # unreachable, or refused: the tokens are forgotten here either way
            return "failed"
        return "revoked"
