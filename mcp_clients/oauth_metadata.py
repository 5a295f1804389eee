"""Authorization server metadata (RFC 8414, OpenID Connect Discovery): where it lives and what it says.

Used for every authorization server the bot talks to. `metadata_urls(issuer)` is the order the MCP
authorization spec prescribes: for an issuer with a path, RFC 8414 path insertion, then OIDC path insertion,
then OIDC path appending (never the root documents, which belong to another issuer on the same host); for a
root issuer, RFC 8414 then OIDC. A document is used only when its `issuer` is the one the URL was built from
(RFC 8414 §3.3, compared as strings; a root issuer with and without its trailing slash is one issuer), or,
where the caller says so, one it accepts (`accept`: the 2025-03-26 fallback takes any issuer on the MCP
server's own origin).

Every document is read with a size cap and no redirects: these URLs come from servers, not operators.

Errors: `MetadataError` (unreachable, a 5xx, a malformed document, another issuer's document); its
message is safe to show. A document that is simply not there (4xx at every candidate) is `None`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
from pydantic_core import from_json

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "AuthServerMetadata",
    "MetadataError",
    "discover_metadata",
    "fetch_document",
    "issuers_match",
    "metadata_urls",
]

MAX_DOCUMENT_BYTES = 256 * 1024
METADATA_TIMEOUT_SECONDS = 10.0
RFC8414 = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"


class MetadataError(Exception):
    """The metadata could not be used; the message says why and is safe to show."""


def _strings(doc: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"authorization server metadata: {key} is not a list of strings")
    return tuple(value)


def _string(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MetadataError(f"authorization server metadata: {key} is not a string")
    return value


@dataclass(frozen=True)
class AuthServerMetadata:
    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    scopes_supported: tuple[str, ...] | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    grant_types_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] | None = None
    client_id_metadata_document_supported: bool = False
    # RFC 9207: when true, an authorization response without `iss` must be refused.
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, doc: Any) -> AuthServerMetadata:
        """The document's fields the bot uses, type-checked; `MetadataError` when one is malformed."""
        if not isinstance(doc, Mapping):
            raise MetadataError("authorization server metadata is not a JSON object")
        issuer = _string(doc, "issuer")
        if issuer is None:
            raise MetadataError("authorization server metadata has no issuer")
        return cls(
            issuer=issuer,
            authorization_endpoint=_string(doc, "authorization_endpoint"),
            token_endpoint=_string(doc, "token_endpoint"),
            registration_endpoint=_string(doc, "registration_endpoint"),
            revocation_endpoint=_string(doc, "revocation_endpoint"),
            jwks_uri=_string(doc, "jwks_uri"),
            userinfo_endpoint=_string(doc, "userinfo_endpoint"),
            scopes_supported=_strings(doc, "scopes_supported"),
            code_challenge_methods_supported=_strings(doc, "code_challenge_methods_supported"),
            grant_types_supported=_strings(doc, "grant_types_supported"),
            token_endpoint_auth_methods_supported=_strings(doc, "token_endpoint_auth_methods_supported"),
            token_endpoint_auth_signing_alg_values_supported=_strings(
                doc, "token_endpoint_auth_signing_alg_values_supported"
            ),
            client_id_metadata_document_supported=doc.get("client_id_metadata_document_supported") is True,
            authorization_response_iss_parameter_supported=(
                doc.get("authorization_response_iss_parameter_supported") is True
            ),
            raw=doc,
        )

    @property
    def supports_s256(self) -> bool:
        return "S256" in (self.code_challenge_methods_supported or ())


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be, in the order to try (MCP authorization, "Authorization Server
    Metadata Discovery")."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if path:
        return [f"{origin}{RFC8414}{path}", f"{origin}{OIDC}{path}", f"{origin}{path}{OIDC}"]
    return [f"{origin}{RFC8414}", f"{origin}{OIDC}"]


def issuers_match(a: str, b: str) -> bool:
    """RFC 8414 §3.3's simple string comparison, except that `https://h` and `https://h/` (a root issuer
    with and without its slash, as URL libraries print it) name the same server."""
    if a == b:
        return True
    shorter, longer = sorted((a, b), key=len)
    parts = urlsplit(shorter)
    return longer == f"{shorter}/" and shorter == f"{parts.scheme}://{parts.netloc}"


async def fetch_document(
    http: httpx2.AsyncClient,
    url: str,
    *,
    timeout: float = METADATA_TIMEOUT_SECONDS,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """GET `url` and return (status, parsed JSON or None). The body is read up to MAX_DOCUMENT_BYTES only;
    redirects are not followed (a 3xx is returned as it is). `MetadataError` when unreachable or too big."""
    try:
        async with http.stream(
            "GET", url, timeout=timeout, follow_redirects=False, headers=dict(headers or {})
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise MetadataError(f"{_where(url)} answered with more than {MAX_DOCUMENT_BYTES} bytes")
            status = response.status_code
    except httpx2.HTTPError as exc:
        raise MetadataError(f"{_where(url)} could not be reached ({type(exc).__name__})") from None
    if status != 200:
        return status, None
    try:
        return status, from_json(bytes(body))
    except ValueError:
        raise MetadataError(f"{_where(url)} did not answer with JSON") from None


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def discover_metadata(
    http: httpx2.AsyncClient,
    issuer: str,
    *,
    urls: list[str] | None = None,
    accept: Callable[[str], bool] | None = None,
) -> AuthServerMetadata | None:
    """The metadata of `issuer` from the first of `urls` (default `metadata_urls(issuer)`) that has it;
    None when none does (4xx everywhere). A 5xx stops the search: it says nothing about the other places."""
    for url in urls if urls is not None else metadata_urls(issuer):
        status, doc = await fetch_document(http, url)
        if status >= 500:
            raise MetadataError(f"{_where(url)} answered HTTP {status}")
        if doc is None:
            continue
        metadata = AuthServerMetadata.parse(doc)
        if not issuers_match(metadata.issuer, issuer) and not (accept and accept(metadata.issuer)):
            # RFC 8414 §3.3: metadata naming another issuer is someone else's (a mix-up in waiting).
            raise MetadataError(f"the metadata at {_where(url)} is for another issuer ({metadata.issuer})")
        return metadata
    return None
