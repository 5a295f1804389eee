"""The bot's own token for an `auth: oauth` server, for callers that are no person (workflows run with
`identity: service`): client_credentials at the server's authorization server, with `resource`, as the
client pre-registered in governance (client_secret_basic/post, or private_key_jwt with a key from the
environment). The token is kept sealed under the client (`TokenStore`, team "_service") until shortly
before it expires; a server without pre-registered credentials has no service identity at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2

from mcp_clients.server_oauth_clients import ClientRegistry
from mcp_clients.server_oauth_discovery import discover
from mcp_clients.server_oauth_errors import ServerAuthError
from mcp_clients.server_oauth_scopes import Want, select_scope
from mcp_clients.server_oauth_tokens import Stored, TokenStore, request_token
from mcp_clients.tokens import Audience
from registry_cache.model import ServerEntry

__all__ = ["SERVICE_TEAM", "ServiceTokens"]

SERVICE_TEAM = "_service"


class ServiceTokens:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        clients: ClientRegistry,
        store: TokenStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._clients = clients
        self._store = store
        self._clock = clock

    async def token(self, entry: ServerEntry) -> str:
        """Raises `ServerAuthError` when the server has no pre-registered client or its server refuses."""
        audience = Audience(entry.name, entry.url, entry.resource)
        client_id = _client_id(entry)
        stored = await self._store.load(SERVICE_TEAM, client_id, audience)
        if stored is not None and stored.fresh(self._clock()):
            return stored.access_token
        found = await discover(self._http, entry.url, resource=entry.governance.resource)
        client = self._clients.pre_registered(entry, found.metadata.token_endpoint_auth_methods_supported)
        await self._clients.pin(entry, client, found.issuer)
        form = {"grant_type": "client_credentials", "resource": found.resource}
        scope = select_scope(found, Want(None, None), None)
        if scope:
            form["scope"] = " ".join(
                s for s in scope.split() if s != "offline_access"
            )  # nobody to keep it for
        assert found.metadata.token_endpoint is not None  # discovery refuses metadata without one
        grant = await request_token(
            self._http, found.metadata.token_endpoint, form, client.credentials, issuer=found.issuer
        )
        stored = Stored(
            access_token=grant.access_token,
            expires_at=grant.expires_at,
            refresh_token=None,  # a new client_credentials grant is as cheap as a refresh
            requested_scope=form.get("scope", ""),
            resource=found.resource,
            issuer=found.issuer,
            token_endpoint=found.metadata.token_endpoint,
            revocation_endpoint=None,
            client=client.record(),
            url=entry.url,
        )
        if grant.expires_at is not None:  # a token of unknown lifetime is used once, never kept
            await self._store.save(SERVICE_TEAM, client_id, audience, stored)
        return grant.access_token

    async def invalidate(self, entry: ServerEntry) -> None:
        audience = Audience(entry.name, entry.url, entry.resource)
        await self._store.forget(SERVICE_TEAM, _client_id(entry), audience)


def _client_id(entry: ServerEntry) -> str:
    if entry.governance.oauth_client is None:
        raise ServerAuthError(f"{entry.short_name} has no pre-registered client, so no service identity")
    return entry.governance.oauth_client.client_id
