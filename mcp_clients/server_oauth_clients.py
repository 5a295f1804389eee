"""Which client the bot is at an `auth: oauth` server's authorization server (MCP authorization, "Client
Registration"), in this order:

1. **Pre-registered** in governance (`oauth_client`: a client id, and the *names* of environment variables
   holding its secret or private key). They are sent only to one issuer: the governance `issuer`, or else the
   first one the server's metadata named (pinned in Redis), so a server whose metadata later points
   elsewhere cannot collect them.
2. **A Client ID Metadata Document** the bot serves at PUBLIC_URL (`client_metadata_document`), when the
   authorization server says it fetches them and PUBLIC_URL is https: the document's URL is the client id.
3. **Dynamic registration** (RFC 7591, with `application_type`), once per issuer: the registration is kept
   sealed under `chatops:srvclient:{issuer digest}` and opens only for that issuer, never for another.

Errors: `ServerAuthError` when no way is left (the owners must pre-register the bot).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx2
import redis.asyncio as aioredis
from pydantic_core import from_json
from redis.exceptions import LockError

from mcp_clients.oauth_client_auth import AUTH_METHODS, ClientCredentials, load_private_key
from mcp_clients.oauth_metadata import same_issuer
from mcp_clients.sealing import Binding, Sealer, SealError
from mcp_clients.server_oauth_discovery import Discovered, reads_client_metadata_documents
from mcp_clients.server_oauth_errors import ServerAuthError
from registry_cache.model import ServerEntry
from registry_cache.urls import is_loopback_host

__all__ = [
    "CALLBACK_PATH",
    "CLIENT_METADATA_PATH",
    "Client",
    "ClientRegistry",
    "client_metadata_document",
    "client_metadata_url",
]

CALLBACK_PATH = "/oauth/server-callback"
CLIENT_METADATA_PATH = "/oauth/client-metadata.json"
CLIENT_NAME = "chatops-mcp"
REGISTRATION_TIMEOUT_SECONDS = 15.0
Source = Literal["pre-registered", "metadata-document", "dynamic"]
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")


def client_metadata_url(public_url: str) -> str | None:
    """The URL of the bot's Client ID Metadata Document, or None when PUBLIC_URL is not https (a client id
    URL must be https with a path, so a plain-http deployment registers dynamically instead)."""
    base = public_url.rstrip("/")
    return f"{base}{CLIENT_METADATA_PATH}" if base.startswith("https://") else None


def _application_type(redirect_uri: str) -> str:
    host = httpx2.URL(redirect_uri).host
    return "native" if redirect_uri.startswith("http://") and is_loopback_host(host) else "web"


def client_metadata_document(public_url: str, *, client_id: str | None = None) -> dict[str, Any]:
    """What the bot serves at `client_metadata_url(public_url)` (`client_id`: that URL, or another the
    document is published at)."""
    base = public_url.rstrip("/")
    redirect_uri = f"{base}{CALLBACK_PATH}"
    return {
        "client_id": client_id or client_metadata_url(public_url) or f"{base}{CLIENT_METADATA_PATH}",
        "client_name": CLIENT_NAME,
        "client_uri": base,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": _application_type(redirect_uri),
    }


@dataclass(frozen=True)
class Client:
    credentials: ClientCredentials
    source: Source
    secret_env: str | None = None  # pre-registered: where its secret and key are read from
    key_env: str | None = None

    def record(self) -> dict[str, Any]:
        """What a sealed state or token record keeps of the client: a pre-registered client's secrets stay
        in the environment (only the variables' names are kept) and are read again when needed."""
        kept: dict[str, Any] = {"source": self.source, "client_id": self.credentials.client_id}
        kept["method"] = self.credentials.method
        if self.source == "pre-registered":
            kept.update(secret_env=self.secret_env, key_env=self.key_env)
        elif self.credentials.secret:
            kept["secret"] = self.credentials.secret
        return kept


class ClientRegistry:
    def __init__(
        self,
        redis: aioredis.Redis,
        sealer: Sealer,
        http: httpx2.AsyncClient,
        *,
        redirect_uri: str,
        metadata_url: str | None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._redis = redis
        self._sealer = sealer
        self._http = http
        self.redirect_uri = redirect_uri
        self.metadata_url = metadata_url
        self._environ = environ

    @staticmethod
    def key(issuer: str) -> str:
        """Where the bot's dynamic registration at `issuer` is kept."""
        return "chatops:srvclient:" + _digest(issuer)

    async def client_for(self, entry: ServerEntry, found: Discovered) -> Client:
        """The client to authorize with at `found`'s authorization server, registering one if need be."""
        if entry.governance.oauth_client is not None:
            client = self.pre_registered(entry, found.metadata.token_endpoint_auth_methods_supported)
            await self.pin(entry, client, found.issuer)
            return client
        if self.metadata_url and reads_client_metadata_documents(found.metadata):
            return Client(ClientCredentials(self.metadata_url, method="none"), "metadata-document")
        return await self._dynamic(found)

    def pre_registered(self, entry: ServerEntry, supported: tuple[str, ...] | None = None) -> Client:
        pre = entry.governance.oauth_client
        if pre is None:
            raise ServerAuthError(f"{entry.short_name} has no pre-registered client in the registry")
        credentials = self._credentials(pre.client_id, pre.client_secret_env, pre.private_key_env)
        method = pre.token_endpoint_auth_method or credentials.choose(supported)
        return Client(
            replace(credentials, method=method), "pre-registered", pre.client_secret_env, pre.private_key_env
        )

    def restore(self, kept: Mapping[str, Any]) -> Client:
        """The client a state or token record was made with, from `Client.record()`."""
        source, client_id, method = kept.get("source"), kept.get("client_id"), kept.get("method")
        if not isinstance(client_id, str) or method not in AUTH_METHODS:
            raise ServerAuthError("the stored connection is unreadable; connect again")
        if source == "pre-registered":
            secret_env, key_env = kept.get("secret_env"), kept.get("key_env")
            secret_env = secret_env if isinstance(secret_env, str) else None
            key_env = key_env if isinstance(key_env, str) else None
            credentials = replace(self._credentials(client_id, secret_env, key_env), method=method)
            return Client(credentials, source, secret_env, key_env)
        if source not in ("metadata-document", "dynamic"):
            raise ServerAuthError("the stored connection is unreadable; connect again")
        secret = kept.get("secret")
        return Client(ClientCredentials(client_id, str(secret) if secret else None, method=method), source)

    def _credentials(self, client_id: str, secret_env: str | None, key_env: str | None) -> ClientCredentials:
        secret, pem = self._env(secret_env), self._env(key_env)
        try:
            key = load_private_key(pem) if pem is not None else None
        except ValueError as exc:
            raise ServerAuthError(f"the private key in {key_env} {exc}") from None
        return ClientCredentials(client_id, secret, key)

    def _env(self, name: str | None) -> str | None:
        if name is None:
            return None
        value = self._environ.get(name)
        if not value:
            raise ServerAuthError(f"the environment variable {name} (named in the registry) is not set")
        return value

    async def pin(self, entry: ServerEntry, client: Client, issuer: str) -> None:
        """Refuse to send `entry`'s pre-registered credentials to any issuer but theirs."""
        pre = entry.governance.oauth_client
        assert pre is not None
        if pre.issuer is not None:
            if not same_issuer(pre.issuer, issuer):
                raise ServerAuthError(
                    f"{entry.short_name} now names the authorization server {issuer}, but its pre-registered "
                    f"client is for {pre.issuer}; its credentials are not sent there"
                )
            return
        key = "chatops:srvclient:pin:" + _digest(entry.name, client.credentials.client_id)
        await self._redis.set(key, issuer, nx=True)
        pinned = await self._redis.get(key)
        pinned_issuer = pinned.decode() if isinstance(pinned, bytes) else str(pinned)
        if not same_issuer(pinned_issuer, issuer):
            raise ServerAuthError(
                f"{entry.short_name} now names the authorization server {issuer}, but its pre-registered "
                f"client was first used at {pinned_issuer}; its credentials are not sent to another one"
            )

    async def _dynamic(self, found: Discovered) -> Client:
        endpoint = found.metadata.registration_endpoint
        if endpoint is None:
            raise ServerAuthError(
                f"the authorization server {found.issuer} offers no registration; the server's owners must "
                "pre-register the bot (oauth_client in the registry)"
            )
        key = self.key(found.issuer)
        kept = await self._stored(key, found.issuer)
        if kept is not None:
            return kept
        lock = self._redis.lock(key + ":lock", timeout=REGISTRATION_TIMEOUT_SECONDS + 5, blocking_timeout=30)
        try:
            if not await lock.acquire():
                raise ServerAuthError("another registration at that authorization server is slow; try again")
            kept = await self._stored(key, found.issuer)  # registered by someone else while we waited
            if kept is not None:
                return kept
            client, expires_at = await self._register(endpoint, found)
            sealed = self._sealer.seal(json.dumps(client.record()), _binding(found.issuer), purpose="client")
            record = {"issuer": found.issuer, "client": sealed, "redirect_uri": self.redirect_uri}
            await self._redis.set(key, json.dumps({**record, "expires_at": expires_at}))
            return client
        finally:
            with contextlib.suppress(LockError):  # it expired: a second registration is harmless
                await lock.release()

    async def _stored(self, key: str, issuer: str) -> Client | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        record = json.loads(raw)
        expires_at = float(record.get("expires_at") or 0)
        if record.get("redirect_uri") != self.redirect_uri or (expires_at and expires_at <= time.time()):
            return None  # PUBLIC_URL moved, or the secret expired: register again
        try:  # sealed to the issuer: a registration copied under another issuer's key does not open
            kept = json.loads(self._sealer.open(str(record["client"]), _binding(issuer), purpose="client"))
        except (SealError, KeyError, ValueError):
            return None
        method, secret = kept.get("method"), kept.get("secret")
        if method not in AUTH_METHODS:
            return None
        return Client(ClientCredentials(str(kept["client_id"]), secret, method=method), "dynamic")

    async def _register(self, endpoint: str, found: Discovered) -> tuple[Client, float]:
        supported = found.metadata.token_endpoint_auth_methods_supported
        wanted = next((m for m in (*_SECRET_METHODS, "none") if m in (supported or ())), None)
        body = {
            "client_name": CLIENT_NAME,
            "redirect_uris": [self.redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": wanted or "client_secret_basic",
            "application_type": _application_type(self.redirect_uri),
        }
        try:
            response = await self._http.post(
                endpoint, json=body, timeout=REGISTRATION_TIMEOUT_SECONDS, follow_redirects=False
            )
            answer = from_json(response.content) if response.content else None
        except httpx2.HTTPError as exc:
            raise ServerAuthError(f"registration at {found.issuer} failed ({type(exc).__name__})") from None
        except ValueError:
            answer = None
        if response.status_code not in (200, 201) or not isinstance(answer, dict):
            raise ServerAuthError(f"{found.issuer} refused to register the bot (HTTP {response.status_code})")
        client_id, secret = answer.get("client_id"), answer.get("client_secret")
        if (
            not isinstance(client_id, str)
            or not client_id
            or (secret is not None and not isinstance(secret, str))
        ):
            raise ServerAuthError(f"{found.issuer} answered the registration without a usable client id")
        method = answer.get("token_endpoint_auth_method") or (
            body["token_endpoint_auth_method"] if secret else "none"
        )
        if method not in (*_SECRET_METHODS, "none") or (method != "none" and not secret):
            raise ServerAuthError(f"{found.issuer} registered the bot for {method}, which it cannot use")
        expires = answer.get("client_secret_expires_at")
        expires_at = float(expires) if isinstance(expires, (int, float)) and expires > 0 else 0.0
        return Client(ClientCredentials(client_id, secret or None, method=method), "dynamic"), expires_at


def _binding(issuer: str) -> Binding:
    return Binding("_bot", "server-oauth-client", issuer)


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:32]
