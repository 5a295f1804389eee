"""Authorization server metadata: RFC 8414 and OpenID Connect Discovery, for the company's identity provider
and for the authorization servers of MCP servers alike.

Where to look, in this order (RFC 8414 §3.1, OpenID Connect Discovery §4, as the MCP authorization spec orders
them):
- an issuer without a path (`https://h`): `https://h/.well-known/oauth-authorization-server`, then
  `https://h/.well-known/openid-configuration`;
- an issuer with a path (`https://h/tenant`): `https://h/.well-known/oauth-authorization-server/tenant` and
  `https://h/.well-known/openid-configuration/tenant` (path insertion), then
  `https://h/tenant/.well-known/openid-configuration` (path appending: Keycloak, Okta, Entra ID).

A document is used only when its `issuer` is exactly the issuer asked for (RFC 8414 §3.3: a document that
names another issuer is a mix-up or a mistake, and the search stops there). The one allowance: an issuer that
is only an origin is the same with or without its single "/" (RFC 3986 §6.2.3; a configured URL cannot tell
them apart once parsed). Everything later (the `iss` of an authorization response, of every JWT) is compared
with the document's own `issuer`, byte for byte.

Errors: `MetadataError`, whose message is safe to show and names what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

__all__ = [
    "AuthServerMetadata",
    "MetadataError",
    "discover",
    "metadata_urls",
    "parse_metadata",
    "same_issuer",
]

RFC8414 = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"


class MetadataError(Exception):
    """The metadata could not be found or used; the message says why and is safe to show."""


@dataclass(frozen=True)
class AuthServerMetadata:
    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    registration_endpoint: str | None = None
    # None: the document did not say (each RFC gives its own default), () is "none".
    scopes_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    grant_types_supported: tuple[str, ...] | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    # RFC 9207: when true, an authorization response without `iss` must be refused.
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata of `issuer` may be, in the order to try."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")  # RFC 8414 §3.1: a terminating "/" is removed before inserting

    def at(new_path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))

    if not path:
        return [at(RFC8414), at(OIDC)]
    return [at(RFC8414 + path), at(OIDC + path), at(path + OIDC)]


def same_issuer(configured: str, found: str) -> bool:
    """Whether a document's `issuer` is the configured one: exactly, except an origin's optional "/"."""
    if found == configured:
        return True
    if urlsplit(configured).path not in ("", "/"):
        return False
    origin = configured.rstrip("/")
    return found in (origin, origin + "/")


async def discover(http: httpx2.AsyncClient, issuer: str, *, timeout: float = 10.0) -> AuthServerMetadata:
    """The first metadata document found for `issuer` (see the module docstring for the order)."""
    last = "no metadata document"
    for url in metadata_urls(issuer):
        path = urlsplit(url).path
        try:
            response = await http.get(url, headers={"Accept": "application/json"}, timeout=timeout)
        except httpx2.HTTPError as exc:
            last = f"{type(exc).__name__} at {path}"
            continue
        if response.status_code != 200:
            last = f"HTTP {response.status_code} at {path}"
            continue
        try:
            doc = response.json()
        except ValueError:
            last = f"not JSON at {path}"
            continue
        return parse_metadata(doc, issuer)
    raise MetadataError(f"no metadata found for {issuer} ({last})")


def parse_metadata(doc: Any, issuer: str) -> AuthServerMetadata:
    """Check and type one metadata document for `issuer`; raises `MetadataError`."""
    if not isinstance(doc, Mapping):
        raise MetadataError("the metadata document is not a JSON object")
    found = doc.get("issuer")
    if not isinstance(found, str) or not same_issuer(issuer, found):
        raise MetadataError(f"the metadata names another issuer ({str(found)[:200]!r}, expected {issuer!r})")
    token_endpoint = _url(doc, "token_endpoint")
    if token_endpoint is None:
        raise MetadataError("the metadata has no token_endpoint")
    return AuthServerMetadata(
        issuer=found,
        token_endpoint=token_endpoint,
        authorization_endpoint=_url(doc, "authorization_endpoint"),
        jwks_uri=_url(doc, "jwks_uri"),
        userinfo_endpoint=_url(doc, "userinfo_endpoint"),
        revocation_endpoint=_url(doc, "revocation_endpoint"),
        introspection_endpoint=_url(doc, "introspection_endpoint"),
        registration_endpoint=_url(doc, "registration_endpoint"),
        scopes_supported=_names(doc, "scopes_supported"),
        token_endpoint_auth_methods_supported=_names(doc, "token_endpoint_auth_methods_supported"),
        grant_types_supported=_names(doc, "grant_types_supported"),
        code_challenge_methods_supported=_names(doc, "code_challenge_methods_supported"),
        authorization_response_iss_parameter_supported=(
            doc.get("authorization_response_iss_parameter_supported") is True
        ),
        raw=dict(doc),
    )


def _url(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise MetadataError(f"the metadata's {name} is not an http(s) URL")
    return value


def _names(doc: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = doc.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, str) for v in value)
    ):
        raise MetadataError(f"the metadata's {name} is not a list of strings")
    return tuple(value)
