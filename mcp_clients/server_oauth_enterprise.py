"""Enterprise-managed authorization (the MCP "cross-app access" extension, SEP-990): the company's identity
provider vouches for a person at an `auth: oauth` server's authorization server, so the person gets a token
there without a consent screen of its own.

1. RFC 8693 token exchange at the company provider: the person's ID token (`subject_token_type` id_token)
   for an Identity Assertion JWT Authorization Grant (`requested_token_type` id-jag) whose `audience` is
   the server's authorization server (its issuer) and whose `resource` is the server;
2. RFC 7523 JWT bearer grant at that authorization server with the grant as `assertion`, authenticated as
   the bot's pre-registered client there.

The grant is short-lived and single-purpose: it is never kept, logged or sent anywhere but step 2.
Not yet wired to account linking: it needs the person's ID token from the company provider at call time.
"""

from __future__ import annotations

import httpx2

from mcp_clients.oauth_client_auth import ClientCredentials
from mcp_clients.server_oauth_discovery import Discovered
from mcp_clients.server_oauth_errors import ServerAuthError
from mcp_clients.server_oauth_tokens import Grant, post_token, request_token

__all__ = ["enterprise_grant"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


async def enterprise_grant(
    http: httpx2.AsyncClient,
    found: Discovered,
    *,
    id_token: str,
    provider_token_endpoint: str,
    provider_issuer: str,
    provider_client: ClientCredentials,
    client: ClientCredentials,
    scope: str | None = None,
) -> Grant:
    """A token for `found`'s server, for the person `id_token` names, by the two steps above."""
    exchange = {
        "grant_type": TOKEN_EXCHANGE,
        "requested_token_type": ID_JAG,
        "audience": found.issuer,
        "resource": found.resource,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN,
    }
    if scope:
        exchange["scope"] = scope
    answer = await post_token(
        http, provider_token_endpoint, exchange, provider_client, issuer=provider_issuer
    )
    assertion = answer.get("access_token")
    if answer.get("issued_token_type") != ID_JAG or not isinstance(assertion, str) or not assertion:
        raise ServerAuthError("the identity provider did not issue an identity assertion grant")
    bearer = {"grant_type": JWT_BEARER, "assertion": assertion}
    if scope:
        bearer["scope"] = scope
    return await request_token(http, found.metadata.token_endpoint, bearer, client, issuer=found.issuer)
