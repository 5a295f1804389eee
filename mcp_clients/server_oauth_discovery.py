"""Finding an MCP server's authorization server (MCP authorization, "Authorization Server Discovery").

1. The server's challenge: a request without a token (`probe`) answers 401 with `WWW-Authenticate: Bearer
   resource_metadata=..., scope=..., error=...` (RFC 6750 §3, RFC 9728 §5.1). A 403 `insufficient_scope`
   challenge seen on a real call may be given instead (step-up).
2. Protected resource metadata (RFC 9728): from the challenge's `resource_metadata`, else the path-aware
   well-known URL, else the root one. Its `resource` must be the server's URL or a parent of it (same
   scheme, host and port; the URL's path at or under the resource's path); any other resource is someone
   else's (`ResourceMismatch`), and nothing is asked of its authorization server.
3. Authorization server metadata (`oauth_metadata`) for the first server the document lists.
4. No protected resource metadata at all (a 2025-03-26 server): metadata at the MCP server's origin, whose
   `issuer` may be any URL on that origin; without that either, the default endpoints `/authorize`,
   `/token` and `/register` at the origin.

Every URL taken from a server (metadata, issuer, endpoints) must pass the registry's URL rules (https, or
http on loopback) before the bot sends anything to it, and the connection itself goes through the egress
guard (no link-local or metadata addresses, whatever DNS says).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from pydantic_core import from_json

from mcp_clients.oauth_metadata import AuthServerMetadata, MetadataError, metadata_urls, parse_metadata
from mcp_clients.server_oauth_errors import ResourceMismatch, ServerAuthError
from registry_cache.urls import UnsafeUrl, canonical_resource, check_server_url

__all__ = [
    "Challenge",
    "Discovered",
    "ResourceMetadata",
    "discover",
    "fetch_document",
    "probe",
    "reads_client_metadata_documents",
    "resource_covers",
    "supports_s256",
]

PRM = "/.well-known/oauth-protected-resource"
PROBE_TIMEOUT_SECONDS = 10.0
METADATA_TIMEOUT_SECONDS = 10.0
MAX_DOCUMENT_BYTES = 256 * 1024
# What a client would send first that needs authorization; a server may let `initialize` through unsigned.
_PROBE = {"jsonrpc": "2.0", "id": "chatops-authorization-probe", "method": "tools/list", "params": {}}
_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')


@dataclass(frozen=True)
class Challenge:
    """A Bearer challenge from `WWW-Authenticate`."""

    status: int
    error: str | None = None
    scope: str | None = None
    resource_metadata: str | None = None

    @classmethod
    def parse(cls, status: int, header: str | None) -> Challenge | None:
        if not header:
            return None
        start = header.lower().find("bearer")
        if start < 0:
            return None
        params: dict[str, str] = {}
        for name, raw in _PARAM.findall(header[start + len("bearer") :]):
            value = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw.startswith('"') else raw
            params.setdefault(name.lower(), value)
        return cls(status, params.get("error"), params.get("scope") or None, params.get("resource_metadata"))

    @property
    def insufficient_scope(self) -> bool:
        return self.status == 403 and self.error == "insufficient_scope"


@dataclass(frozen=True)
class ResourceMetadata:
    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None
    url: str  # where it was read


@dataclass(frozen=True)
class Discovered:
    resource: str  # what goes in `resource` on every authorization and token request
    metadata: AuthServerMetadata
    challenge: Challenge | None
    prm: ResourceMetadata | None
    legacy: bool  # a 2025-03-26 server: no protected resource metadata

    @property
    def issuer(self) -> str:
        return self.metadata.issuer


def supports_s256(metadata: AuthServerMetadata) -> bool:
    return "S256" in (metadata.code_challenge_methods_supported or ())


def reads_client_metadata_documents(metadata: AuthServerMetadata) -> bool:
    return metadata.raw.get("client_id_metadata_document_supported") is True


def _checked(url: str, what: str) -> str:
    try:
        return check_server_url(url)
    except UnsafeUrl as exc:
        raise ServerAuthError(f"the {what} {url!r} is refused: {exc}") from None


async def probe(http: httpx2.AsyncClient, url: str) -> Challenge | None:
    """The server's challenge to a request without a token, or None when it sets none."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        async with http.stream(
            "POST", url, json=_PROBE, headers=headers, timeout=PROBE_TIMEOUT_SECONDS, follow_redirects=False
        ) as response:  # the body is never read: an unprotected server might stream it
            status, header = response.status_code, response.headers.get("www-authenticate")
    except httpx2.HTTPError as exc:
        raise ServerAuthError(f"the server could not be reached ({type(exc).__name__})") from None
    return Challenge.parse(status, header) if status in (401, 403) else None


def resource_covers(resource: str, url: str) -> bool:
    """Whether tokens for `resource` are meant for the server at `url`: the same scheme, host and port, and
    `url`'s path at or under `resource`'s, compared canonically and segment by segment."""
    theirs, ours = urlsplit(canonical_resource(resource)), urlsplit(canonical_resource(url))
    if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc) or theirs.query:
        return False
    return f"{ours.path}/".startswith(f"{theirs.path}/")


def _prm_urls(url: str, challenge: Challenge | None) -> list[str]:
    parts = urlsplit(url)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    urls = []
    if challenge is not None and challenge.resource_metadata:
        urls.append(_checked(challenge.resource_metadata, "resource metadata URL"))
    if path:
        urls.append(f"{origin}{PRM}{path}")
    urls.append(f"{origin}{PRM}")
    return list(dict.fromkeys(urls))


def _parse_prm(doc: Any, url: str) -> ResourceMetadata:
    if not isinstance(doc, Mapping):
        raise ServerAuthError(f"the protected resource metadata at {url} is not a JSON object")
    resource, servers, scopes = (
        doc.get("resource"),
        doc.get("authorization_servers"),
        doc.get("scopes_supported"),
    )
    if not isinstance(resource, str) or not resource:
        raise ServerAuthError(f"the protected resource metadata at {url} names no resource")
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
        raise ServerAuthError(f"the protected resource metadata at {url} names no authorization server")
    if scopes is not None and (not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        raise ServerAuthError(f"the protected resource metadata at {url} has malformed scopes_supported")
    return ResourceMetadata(resource, tuple(servers), tuple(scopes) if scopes is not None else None, url)


async def fetch_document(http: httpx2.AsyncClient, url: str) -> tuple[int, Any]:
    """GET a metadata document: (status, parsed JSON or None). Read up to MAX_DOCUMENT_BYTES, no redirects
    followed (a 3xx is just not the document): these URLs come from servers, not from operators."""
    try:
        async with http.stream(
            "GET",
            url,
            timeout=METADATA_TIMEOUT_SECONDS,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ServerAuthError(f"{_where(url)} answered with more than {MAX_DOCUMENT_BYTES} bytes")
            status = response.status_code
    except httpx2.HTTPError as exc:
        raise ServerAuthError(f"{_where(url)} could not be reached ({type(exc).__name__})") from None
    if status != 200:
        return status, None
    try:
        return status, from_json(bytes(body))
    except ValueError:
        raise ServerAuthError(f"{_where(url)} did not answer with JSON") from None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def _server_metadata(
    http: httpx2.AsyncClient, issuer: str, urls: list[str], accept: Callable[[str], bool] | None = None
) -> AuthServerMetadata | None:
    """The first of `urls` that holds `issuer`'s metadata (`oauth_metadata.parse_metadata` checks the issuer;
    `accept` may take another one); None when none does. A 5xx stops the search: it says nothing about the
    other places."""
    for url in urls:
        status, doc = await fetch_document(http, url)
        if status >= 500:
            raise ServerAuthError(f"{_where(url)} answered HTTP {status}")
        if doc is None:
            continue
        named = doc.get("issuer") if isinstance(doc, Mapping) else None
        expected = named if accept is not None and isinstance(named, str) and accept(named) else issuer
        try:
            return parse_metadata(doc, expected)
        except MetadataError as exc:
            raise ServerAuthError(f"{_where(url)}: {exc}") from None
    return None


async def _resource_metadata(
    http: httpx2.AsyncClient, url: str, challenge: Challenge | None
) -> ResourceMetadata | None:
    for candidate in _prm_urls(url, challenge):
        status, doc = await fetch_document(http, candidate)
        if status >= 500 or status == 429:
            # Says nothing about whether the server publishes metadata: no reason for the 2025-03-26 way.
            raise ServerAuthError(f"the server's protected resource metadata answered HTTP {status}")
        if doc is not None:
            return _parse_prm(doc, candidate)
    return None


async def _legacy_metadata(http: httpx2.AsyncClient, url: str) -> AuthServerMetadata:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"

    def same_origin(issuer: str) -> bool:  # the server's own origin vouches for what it serves there
        found = urlsplit(issuer)
        return (found.scheme, found.netloc) == (parts.scheme, parts.netloc)

    found = await _server_metadata(
        http, origin, [f"{origin}/.well-known/oauth-authorization-server"], same_origin
    )
    if found is not None:
        return found
    return AuthServerMetadata(
        issuer=origin,
        authorization_endpoint=f"{origin}/authorize",
        token_endpoint=f"{origin}/token",
        registration_endpoint=f"{origin}/register",
        code_challenge_methods_supported=("S256",),  # 2025-03-26 made PKCE mandatory for everyone
    )


def _check_endpoints(metadata: AuthServerMetadata) -> None:
    for what, endpoint in (
        ("authorization endpoint", metadata.authorization_endpoint),
        ("token endpoint", metadata.token_endpoint),
        ("registration endpoint", metadata.registration_endpoint),
        ("revocation endpoint", metadata.revocation_endpoint),
    ):
        if endpoint is not None:
            _checked(endpoint, what)


async def discover(
    http: httpx2.AsyncClient, url: str, *, challenge: Challenge | None = None, resource: str | None = None
) -> Discovered:
    """Everything needed to ask `url`'s authorization server for a token. `challenge`: one already seen
    (else the server is probed); `resource`: the audience the registry names for it, which the server's
    own metadata must agree with."""
    if challenge is None:
        challenge = await probe(http, url)
    prm = await _resource_metadata(http, url, challenge)
    if prm is None:
        metadata, sent = await _legacy_metadata(http, url), canonical_resource(url)
    else:
        if not resource_covers(prm.resource, url):
            raise ResourceMismatch(
                f"the server's metadata says it is {prm.resource}, which is not {url}; not connecting"
            )
        issuer = _checked(prm.authorization_servers[0], "authorization server")
        found = await _server_metadata(http, issuer, metadata_urls(issuer))
        if found is None:
            raise ServerAuthError(f"the authorization server {issuer} publishes no metadata")
        metadata, sent = found, prm.resource
    if resource is not None and canonical_resource(resource) != canonical_resource(sent):
        raise ResourceMismatch(f"the registry says its resource is {resource}, the server says {sent}")
    _check_endpoints(metadata)
    return Discovered(sent, metadata, challenge, prm, legacy=prm is None)
