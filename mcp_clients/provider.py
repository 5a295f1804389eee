"""The identity provider as the bot sees it: discovery, JWKS, and the token endpoint (SPEC §5).

Endpoints come from RFC 8414 metadata, falling back to OpenID discovery. Every JWT the provider issues is
verified here (signature from its JWKS, issuer, expiry) before the bot believes a `sub` or a group in it.
Token-endpoint errors become typed exceptions: `invalid_grant`/`invalid_target` end a link (strict providers
have already rotated the refresh token), anything else is a transient `ProviderError`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt

__all__ = [
    "Claims",
    "LinkEnded",
    "Pkce",
    "Provider",
    "ProviderError",
    "ProviderMetadata",
    "TokenResponse",
]

JWKS_REFRESH_MIN_SECONDS = 30.0
LEEWAY_SECONDS = 30
# The longest one token request may take: what the per-person refresh lock (mcp_clients.tokens) is sized by.
TOKEN_REQUEST_TIMEOUT_SECONDS = 15.0


class ProviderError(Exception):
    """The provider could not be used right now (network, 5xx, malformed answer). Safe to show."""


class LinkEnded(ProviderError):
    """The provider refused the refresh token for good; the person must connect again."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the identity provider answered {error}")
        self.error = error


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    # RFC 9207: when true, an authorization response without `iss` must be refused.
    authorization_response_iss_parameter_supported: bool = False


@dataclass(frozen=True)
class Claims:
    sub: str
    email: str
    groups: frozenset[str]
    expires_at: float
    raw: Mapping[str, Any]


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


class Provider:
    def __init__(self, http: httpx2.AsyncClient, issuer: str, client_id: str, client_secret: str) -> None:
        self._http = http
        self.issuer = issuer.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._metadata: ProviderMetadata | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_at = 0.0

    @property
    def client_id(self) -> str:
        return self._client_id

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            self._metadata = await self._discover()
        return self._metadata

    async def _discover(self) -> ProviderMetadata:
        last = "no discovery document"
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            try:
                response = await self._http.get(self.issuer + path, timeout=10)
            except httpx2.HTTPError as exc:
                last = type(exc).__name__
                continue
            if response.status_code != 200:
                last = f"HTTP {response.status_code} from {path}"
                continue
            doc = response.json()
            if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                # RFC 8414 §3.3: a metadata document for another issuer must not be used.
                raise ProviderError("identity provider metadata names a different issuer")
            try:
                return ProviderMetadata(
                    issuer=str(doc["issuer"]),
                    authorization_endpoint=str(doc["authorization_endpoint"]),
                    token_endpoint=str(doc["token_endpoint"]),
                    jwks_uri=str(doc["jwks_uri"]),
                    authorization_response_iss_parameter_supported=(
                        doc.get("authorization_response_iss_parameter_supported") is True
                    ),
                )
            except KeyError as exc:
                raise ProviderError(f"identity provider metadata lacks {exc.args[0]}") from None
        raise ProviderError(f"identity provider discovery failed ({last})")

    async def _keyset(self, force: bool = False) -> jwt.PyJWKSet:
        now = time.monotonic()
        if self._jwks is None or (force and now - self._jwks_at > JWKS_REFRESH_MIN_SECONDS):
            meta = await self.metadata()
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
            claims = jwt.decode(
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
        groups = claims.get("groups") or []
        return Claims(
            sub=str(claims["sub"]),
            email=str(claims.get("email") or ""),
            groups=frozenset(str(g) for g in groups) if isinstance(groups, list) else frozenset(),
            expires_at=float(claims["exp"]),
            raw=claims,
        )

    async def _token(self, form: dict[str, str]) -> TokenResponse:
        meta = await self.metadata()
        try:
            response = await self._http.post(
                meta.token_endpoint,
                data=form,
                auth=(self._client_id, self._client_secret),
                headers={"Accept": "application/json"},
                timeout=TOKEN_REQUEST_TIMEOUT_SECONDS,
            )
        except httpx2.HTTPError as exc:
            raise ProviderError(f"identity provider unreachable ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200:
            error = str(body.get("error") or f"HTTP {response.status_code}")
            if error in ("invalid_grant", "invalid_target"):
                raise LinkEnded(error)
            raise ProviderError(f"identity provider refused the token request ({error})")
        if "access_token" not in body:
            raise ProviderError("identity provider answer has no access_token")
        expires_in = float(body.get("expires_in") or 300)
        return TokenResponse(
            access_token=str(body["access_token"]),
            expires_at=time.time() + expires_in,
            refresh_token=body.get("refresh_token"),
            id_token=body.get("id_token"),
            scope=str(body.get("scope") or ""),
        )

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, pkce: Pkce, resources: Sequence[str]
    ) -> str:
        meta = await self.metadata()
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", self._client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid email profile offline_access"),
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

    async def refresh(self, refresh_token: str, *, resource: str) -> TokenResponse:
        return await self._token(
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": resource}
        )

    async def client_credentials(self, *, resource: str) -> TokenResponse:
        return await self._token({"grant_type": "client_credentials", "resource": resource})
