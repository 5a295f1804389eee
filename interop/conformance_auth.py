"""The conformance suite's authorization scenarios, played by this project's own per-server OAuth code.

The suite's server is registered as an `auth: oauth` server (through the real registry parser), and one
person connects it the way the bot's people do: `PerServerAuth.authorize` gives the authorization URL, the
person's browser follows it (the suite's authorization server approves at once and redirects to the bot's
callback, whose query is read here instead of being served), and `finish` redeems the code. The MCP
traffic goes through `Connection` with the person's `bearer_flow`; what a failure means (connect, grant
more access, or stop: the step-up limit) is `after_failure`'s answer, as in the gateway.

Pre-registered credentials from the suite's context are named in governance by environment variable, as an
operator would; the client-credentials scenarios use the bot's service identity (`PerServerAuth.service`),
and cross-app access trades the suite's company ID token for a token (`server_oauth_enterprise`).
Tokens and state live in a real Redis: CHATOPS_CONFORMANCE_REDIS_URL (set by `interop.conformance`), or a
private redis-server started for this run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from mcp import MCPError

from fixtures.redis_proc import RedisProc
from mcp_clients.connection import BearerFlow, ConnectError, Connection
from mcp_clients.egress import outbound_client
from mcp_clients.oauth_client_auth import ClientCredentials
from mcp_clients.sealing import Sealer
from mcp_clients.server_oauth import PerServerAuth
from mcp_clients.server_oauth_discovery import discover
from mcp_clients.server_oauth_enterprise import enterprise_grant
from mcp_clients.server_oauth_errors import ConnectNeeded
from mcp_clients.tokens import TokenUnavailable
from registry_cache.model import GOVERNANCE_KEY, ServerEntry, parse_entries

__all__ = ["conformance_entry", "run_auth"]

# The suite's authorization servers accept this URL as a Client ID Metadata Document without fetching it:
# it stands for PUBLIC_URL + /oauth/client-metadata.json of a deployment.
CIMD_URL = "https://conformance-test.local/client-metadata.json"
PUBLIC_URL = "http://localhost:3000"
TEAM, USER = "T0CONFORMANCE", "U0CONFORMANCE"
SERVER = "io.github.modelcontextprotocol/conformance-{scenario}"  # one server per scenario, as it is
SECRET_ENV, KEY_ENV = "CHATOPS_OAUTH_CONFORMANCE_SECRET", "CHATOPS_OAUTH_CONFORMANCE_KEY"
CALL_TIMEOUT_SECONDS = 20.0
MAX_ROUNDS = 6  # connect + step-ups stop well before this; it only bounds a misbehaving run

Session = Callable[[Connection], Awaitable[int]]


def conformance_entry(url: str, scenario: str, context: dict[str, Any]) -> tuple[ServerEntry, dict[str, str]]:
    """The suite's server as a registry entry, and the environment its governance names. Each scenario's
    server is another server: pre-registered credentials are pinned to the first authorization server they
    are used with, and the next scenario's has another port."""
    governance: dict[str, Any] = {"status": "active", "auth": "oauth", "allowed_groups": ["*"]}
    environ: dict[str, str] = {}
    if "client_id" in context:
        client: dict[str, Any] = {"client_id": context["client_id"]}
        if "client_secret" in context:
            client["client_secret_env"], environ[SECRET_ENV] = SECRET_ENV, str(context["client_secret"])
        if "private_key_pem" in context:
            client["private_key_env"], environ[KEY_ENV] = KEY_ENV, str(context["private_key_pem"])
        governance["oauth_client"] = client
    raw = {
        "server": {
            "name": SERVER.format(scenario=scenario.replace("/", "-")),
            "description": "The MCP conformance suite's test server",
            "version": "1.0.0",
            "remotes": [{"type": "streamable-http", "url": url}],
        },
        "_meta": {GOVERNANCE_KEY: governance},
    }
    entries, skipped = parse_entries([raw])
    if not entries:
        raise ValueError(f"the registry parser refused the entry: {skipped[0].reason}")
    return entries[0], environ


@contextlib.asynccontextmanager
async def _redis() -> AsyncIterator[aioredis.Redis]:
    url = os.environ.get("CHATOPS_CONFORMANCE_REDIS_URL")
    proc = None if url else RedisProc().start()
    client = aioredis.Redis.from_url(url or proc.url)  # type: ignore[union-attr]
    try:
        yield client
    finally:
        await client.aclose()
        if proc is not None:
            proc.stop()


async def _browse(authorization_url: str) -> dict[str, str]:
    """The person's browser: open the authorization URL and read where the server sends it back to."""
    async with httpx2.AsyncClient(timeout=CALL_TIMEOUT_SECONDS) as browser:
        answer = await browser.get(authorization_url, follow_redirects=False)
    location = answer.headers.get("location")
    if answer.status_code not in (301, 302, 303, 307) or not location:
        raise RuntimeError(f"the authorization server answered HTTP {answer.status_code}, not a redirect")
    return dict(httpx2.URL(location).params)


async def _connect(auth: PerServerAuth, entry: ServerEntry) -> None:
    browser = secrets.token_urlsafe(16)
    target = await auth.authorize(TEAM, USER, entry, browser=browser)
    back = await _browse(target)
    connected = await auth.finish(back.get("state"), back.get("code"), back.get("iss"), browser=browser)
    print(f"connected {connected.short_name} (scope: {connected.scope or 'none'})")


async def _as_person(auth: PerServerAuth, entry: ServerEntry, session: Session) -> int:
    for _ in range(MAX_ROUNDS):
        flow = auth.bearer_flow(TEAM, USER, entry)
        connection = Connection(entry.url, flow, timeout=CALL_TIMEOUT_SECONDS)
        try:
            return await session(connection)
        except (ConnectError, MCPError, TokenUnavailable) as exc:
            why = await auth.after_failure(TEAM, USER, entry, flow)
            if not isinstance(why, ConnectNeeded):
                print(f"stopped: {why or exc}")
                return 1
            print(f"asked to {why}")
        finally:
            await connection.close()
        await _connect(auth, entry)
    print("stopped: still not connected")
    return 1


async def _as_service(auth: PerServerAuth, entry: ServerEntry, session: Session) -> int:
    async def token() -> str | None:
        return await auth.service.token(entry)

    async def invalidate() -> None:
        await auth.service.invalidate(entry)

    connection = Connection(entry.url, BearerFlow(token, invalidate), timeout=CALL_TIMEOUT_SECONDS)
    try:
        return await session(connection)
    finally:
        await connection.close()


async def _as_enterprise(
    auth: PerServerAuth, entry: ServerEntry, context: dict[str, Any], session: Session
) -> int:
    """Cross-app access: the company provider's word for the person (their ID token) instead of a consent
    screen at the server's authorization server."""
    async with outbound_client(follow_redirects=False) as http:
        found = await discover(http, entry.url, resource=entry.governance.resource)
        client = auth.clients.pre_registered(entry, found.metadata.token_endpoint_auth_methods_supported)
        grant = await enterprise_grant(
            http,
            found,
            id_token=str(context["idp_id_token"]),
            provider_token_endpoint=str(context["idp_token_endpoint"]),
            provider_issuer=str(context["idp_issuer"]),
            provider_client=ClientCredentials(str(context["idp_client_id"]), method="none"),
            client=client.credentials,
        )

    async def token() -> str | None:
        return grant.access_token

    async def nothing() -> None:
        return None

    connection = Connection(entry.url, BearerFlow(token, nothing), timeout=CALL_TIMEOUT_SECONDS)
    try:
        return await session(connection)
    finally:
        await connection.close()


async def run_auth(url: str, scenario: str, session: Session) -> int:
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    entry, environ = conformance_entry(url, scenario, context)
    async with _redis() as redis:
        sealer = Sealer([Fernet.generate_key().decode()])
        auth = PerServerAuth(redis, sealer, public_url=PUBLIC_URL, metadata_url=CIMD_URL, environ=environ)
        try:
            if scenario.startswith("auth/client-credentials"):
                return await _as_service(auth, entry, session)
            if scenario.startswith("auth/cross-app-access"):
                return await _as_enterprise(auth, entry, context, session)
            return await _as_person(auth, entry, session)
        except TokenUnavailable as exc:  # refused before anything was asked of anyone: say why
            print(f"not connecting: {exc}")
            return 1
        finally:
            await auth.aclose()
