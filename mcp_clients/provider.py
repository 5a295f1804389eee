"""The company's identity provider as the bot sees it: metadata, signing keys, token requests (SPEC §5).

Endpoints come from the provider's metadata (`mcp_clients.oauth_metadata`: RFC 8414 with path insertion,
then OpenID discovery), and the bot authenticates as `mcp_clients.oauth_client_auth` says. `jwks_uri` is
optional: without it no JWT can be verified here, so tokens are treated as opaque (passed on unread) and who
a person is comes from the userinfo endpoint (`mcp_clients.person`). Every JWT the bot believes a `sub` or a
group from is verified here first (signature from the JWKS, issuer exactly as the metadata says, expiry).

Token requests: `authorization_code` (with PKCE), `refresh_token` with `resource` (RFC 8707), with `scope`
(Entra ID's `api://…/.default`) or with neither (a token for the provider itself: userinfo, or the subject
of an exchange), RFC 8693 token exchange, `client_credentials`, and RFC 7009 revocation.

Errors: `ProviderError` (transient or misconfigured: network, 5xx, malformed answers; safe to show) and its
subclass `LinkEnded` (`invalid_grant`/`invalid_target`: strict providers have already rotated the refresh
token, so the link is over).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt

from mcp_clients.claims import ClaimPaths
from mcp_clients.oauth_client_auth import ClientAuthError, ClientCredentials, PrivateKey
from mcp_clients.oauth_metadata import AuthServerMetadata, MetadataError, discover

__all__ = [
    "BASE_SCOPES",
    "GROUPS_SCOPES",
    "TOKEN_REQUEST_TIMEOUT_SECONDS",
    "Claims",
    "LinkEnded",
    "Pkce",
    "Provider",
    "ProviderError",
    "ProviderMetadata",
    "TokenResponse",
    "is_jwt",
]

log = logging.getLogger(__name__)

JWKS_REFRESH_MIN_SECONDS = 30.0
LEEWAY_SECONDS = 30
# The longest one token request may take: what the per-person refresh lock (mcp_clients.tokens) is sized by.
TOKEN_REQUEST_TIMEOUT_SECONDS = 15.0
BASE_SCOPES = ("openid", "email", "profile", "offline_access")
# Scopes that release groups, added to the default scope when the provider lists one (Okta, oidc-provider).
GROUPS_SCOPES = ("groups",)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

ProviderMetadata = AuthServerMetadata


class ProviderError(Exception):
    """The provider could not be used right now (network, 5xx, malformed answer). Safe to show."""


class LinkEnded(ProviderError):
    """The provider refused the refresh token for good; the person must connect again."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the identity provider answered {error}")
        self.error = error


@dataclass(frozen=True)
class Claims:
    sub: str
    email: str
    groups: frozenset[str]
    expires_at: float
    raw: Mapping[str, Any]
    # Whether the groups claim was there at all: a token that does not carry it says nothing about groups.
    has_groups: bool = True


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    expires_at: float
    refresh_token: str | None
    id_token: str | None
    scope: str


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def is_jwt(token: str) -> bool:
    """Whether `token` has a JWT's shape (anything else is opaque to the bot)."""
    try:
        jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    return True


class Provider:
    def __init__(
        self,
        http: httpx2.AsyncClient,
        issuer: str,
        client_id: str,
        client_secret: str = "",
        *,
        private_key: PrivateKey | None = None,
        key_id: str | None = None,
        auth_method: str | None = None,
        scopes: str | None = None,
        claims: ClaimPaths | None = None,
    ) -> None:
        self._http = http
        self._configured_issuer = issuer
        # What links are bound to (sealing, the link record); the metadata's own `issuer` is what every
        # response and JWT is compared with, exactly.
        self.issuer = issuer.rstrip("/")
        self._credentials = ClientCredentials(
            client_id, client_secret or None, private_key, key_id, auth_method
        )
        self._scopes = scopes
        self.claims = claims or ClaimPaths()
        self._metadata: AuthServerMetadata | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0

    @property
    def client_id(self) -> str:
        return self._credentials.client_id

    async def metadata(self) -> AuthServerMetadata:
        if self._metadata is None:
            try:
                self._metadata = await discover(self._http, self._configured_issuer)
            except MetadataError as exc:
                raise ProviderError(f"identity provider discovery failed: {exc}") from None
        return self._metadata

    async def auth_method(self) -> str:
        """How the bot authenticates at this provider (OAUTH_TOKEN_AUTH_METHOD, else chosen from metadata)."""
        return self._credentials.choose((await self.metadata()).token_endpoint_auth_methods_supported)

    async def scope(self) -> str:
        """OAUTH_SCOPES, else the base scopes plus a groups scope the provider lists in scopes_supported."""
        if self._scopes:
            return self._scopes
        supported = (await self.metadata()).scopes_supported or ()
        return " ".join([*BASE_SCOPES, *(s for s in GROUPS_SCOPES if s in supported)])

    async def can_verify(self) -> bool:
        """Whether this provider publishes signing keys; without them every token is opaque to the bot."""
        return (await self.metadata()).jwks_uri is not None

    # --- JWTs ----------------------------------------------------------------------------------------

    async def _keyset(self, force: bool = False) -> jwt.PyJWKSet:
        now = time.monotonic()
        if self._jwks is None or (force and now - self._jwks_at > JWKS_REFRESH_MIN_SECONDS):
            meta = await self.metadata()
            if meta.jwks_uri is None:
                raise ProviderError("the identity provider publishes no signing keys (jwks_uri)")
            try:
                response = await self._http.get(meta.jwks_uri, timeout=10)
                response.raise_for_status()
                self._jwks = jwt.PyJWKSet.from_dict(response.json())
            except (httpx2.HTTPError, jwt.PyJWTError, ValueError) as exc:
                raise ProviderError(
                    f"could not read the provider's signing keys ({type(exc).__name__})"
                ) from None
            self._jwks_at = now
        return self._jwks

    async def verify(self, token: str, *, audience: str | None = None, nonce: str | None = None) -> Claims:
        """Verify a JWT from the provider; `audience=None` skips the audience check (resource tokens)."""
        return self.claims_from(await self.verified(token, audience=audience, nonce=nonce))

    async def verified(
        self, token: str, *, audience: str | None = None, nonce: str | None = None
    ) -> dict[str, Any]:
        """The payload of a JWT from the provider, once signature, issuer, expiry (and audience) hold."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise ProviderError(f"token is not a JWT ({type(exc).__name__})") from None
        keyset = await self._keyset()
        key = next((k for k in keyset.keys if k.key_id == kid), None)
        if key is None:  # the provider may have rotated keys since we last looked
            keyset = await self._keyset(force=True)
            key = next((k for k in keyset.keys if k.key_id == kid), None)
        if key is None:
            raise ProviderError("token is signed with an unknown key")
        meta = await self.metadata()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256", "ES256", "PS256"],
                issuer=meta.issuer,
                audience=audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "sub"], "verify_aud": audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise ProviderError(f"token rejected ({type(exc).__name__})") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise ProviderError("ID token nonce does not match")
        return claims

    def claims_from(self, payload: Mapping[str, Any], *, expires_at: float | None = None) -> Claims:
        """A person's claims as OAUTH_EMAIL_CLAIM and OAUTH_GROUPS_CLAIM place them in `payload`."""
        groups = self.claims.groups_in(payload)
        return Claims(
            sub=str(payload["sub"]),
            email=self.claims.email_in(payload) or "",
            groups=groups or frozenset(),
            expires_at=float(payload["exp"]) if expires_at is None else expires_at,
            raw=payload,
            has_groups=groups is not None,
        )

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo endpoint's claims about the holder of `access_token` (OIDC Core §5.3)."""
        meta = await self.metadata()
        if meta.userinfo_endpoint is None:
            raise ProviderError("the identity provider has no userinfo endpoint")
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            response = await self._http.get(meta.userinfo_endpoint, headers=headers, timeout=10)
        except httpx2.HTTPError as exc:
            raise ProviderError(f"identity provider unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ProviderError(f"the userinfo endpoint answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sub"), str):
            raise ProviderError("the userinfo answer is not a JSON object with a sub")
        return body

    # --- token endpoint ------------------------------------------------------------------------------

    async def _post(self, url: str, form: dict[str, str]) -> httpx2.Response:
        try:
            method = await self.auth_method()
            data, basic = self._credentials.authenticate(method, form, endpoint=url)
        except ClientAuthError as exc:
            raise ProviderError(str(exc)) from None
        try:
            return await self._http.post(
                url,
                data=data,
                auth=basic or httpx2.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
                timeout=TOKEN_REQUEST_TIMEOUT_SECONDS,
            )
        except httpx2.HTTPError as exc:
            raise ProviderError(f"identity provider unreachable ({type(exc).__name__})") from None

    async def _token(self, form: dict[str, str]) -> TokenResponse:
        response = await self._post((await self.metadata()).token_endpoint, form)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code != 200:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            if error in ("invalid_grant", "invalid_target"):
                raise LinkEnded(error)
            raise ProviderError(f"identity provider refused the token request ({error[:80]})")
        if not isinstance(body.get("access_token"), str):
            raise ProviderError("identity provider answer has no access_token")
        try:
            expires_in = float(body.get("expires_in") or 300)
        except (TypeError, ValueError):
            expires_in = 300.0
        return TokenResponse(
            access_token=body["access_token"],
            expires_at=time.time() + expires_in,
            refresh_token=_text_or_none(body.get("refresh_token")),
            id_token=_text_or_none(body.get("id_token")),
            scope=str(body.get("scope") or ""),
        )

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, pkce: Pkce, resources: Sequence[str]
    ) -> str:
        meta = await self.metadata()
        if meta.authorization_endpoint is None:
            raise ProviderError("the identity provider's metadata has no authorization_endpoint")
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", self.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", await self.scope()),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", pkce.challenge),
            ("code_challenge_method", "S256"),
            # Strict providers drop offline_access without explicit consent (SPEC §5).
            ("prompt", "consent"),
        ]
        params += [("resource", r) for r in resources]
        return str(httpx2.URL(meta.authorization_endpoint, params=params))

    async def exchange_code(
        self, code: str, *, redirect_uri: str, verifier: str, resource: str | None
    ) -> TokenResponse:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        form["code_verifier"] = verifier
        if resource:
            form["resource"] = resource
        return await self._token(form)

    async def refresh(
        self, refresh_token: str, *, resource: str | None = None, scope: str | None = None
    ) -> TokenResponse:
        """A token for `resource`, or for `scope`, or (neither) for the provider itself."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        return await self._token(form)

    async def exchange(self, subject_token: str, *, audience: str) -> TokenResponse:
        """RFC 8693: a token for `audience` in exchange for the person's own token."""
        return await self._token(
            {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject_token,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "requested_token_type": ACCESS_TOKEN_TYPE,
                "audience": audience,
            }
        )

    async def client_credentials(
        self, *, resource: str | None = None, scope: str | None = None
    ) -> TokenResponse:
        form = {"grant_type": "client_credentials"}
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        return await self._token(form)

    async def revoke(self, refresh_token: str) -> bool:
        """RFC 7009: revoke a refresh token (and, at most providers, what was issued from it). False when the
        provider offers no revocation endpoint; `ProviderError` when it could not be told."""
        endpoint = (await self.metadata()).revocation_endpoint
        if endpoint is None:
            return False
        form = {"token": refresh_token, "token_type_hint": "refresh_token"}
        response = await self._post(endpoint, form)
        if response.status_code != 200:  # RFC 7009 §2.2: 200 even for a token already invalid
            raise ProviderError(f"the identity provider refused the revocation (HTTP {response.status_code})")
        return True


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
