"""How the bot authenticates to an authorization server's token, revocation and introspection endpoints.

Methods (RFC 6749 §2.3, RFC 7523, OpenID Connect Core §9):
- `client_secret_basic`: HTTP Basic with the id and secret, each form-urlencoded first (RFC 6749 §2.3.1, so a
  secret with ":" or "%" in it still works);
- `client_secret_post`: `client_id` and `client_secret` in the form;
- `private_key_jwt`: a short-lived JWT signed with the bot's private key (`client_assertion`); `iss` and `sub`
  are the client id, `aud` is the URL of the endpoint being called (what Okta and Entra ID require, and what
  RFC 7523 §3 and oidc-provider accept), a fresh `jti` each time;
- `none`: only `client_id` (public clients, authenticated by PKCE alone).

Which one: the configured method if any, else `private_key_jwt` when a key is held, else the secret methods
in the provider's order of preference as RFC 8414 advertises them (`client_secret_basic` when it says
nothing, its default). Errors: `ClientAuthError` (a key that cannot sign), safe to show.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = [
    "ASSERTION_TYPE",
    "AUTH_METHODS",
    "ClientAuthError",
    "ClientCredentials",
    "PrivateKey",
    "load_private_key",
    "public_jwk",
]

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 60

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class ClientAuthError(Exception):
    """The client cannot authenticate as configured; the message is safe to show."""


def load_private_key(pem: str) -> PrivateKey:
    """An RSA, EC or Ed25519 private key from PEM; `ValueError` with a message that never quotes the key."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("is not an unencrypted PEM private key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name not in _EC_ALGORITHMS:
        raise ValueError(f"uses the unsupported curve {key.curve.name}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ValueError("is an RSA key shorter than 2048 bits")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("must be an RSA, EC (P-256/384/521) or Ed25519 key")
    return key


def signing_algorithm(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _EC_ALGORITHMS[key.curve.name]
    return "EdDSA"


def public_jwk(key: PrivateKey, key_id: str | None = None) -> dict[str, Any]:
    """The public half as a JWK: what to register at the provider for `private_key_jwt`."""
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk |= {"use": "sig", "alg": signing_algorithm(key)}
    if key_id:
        jwk["kid"] = key_id
    return jwk


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str | None = field(default=None, repr=False)
    private_key: PrivateKey | None = field(default=None, repr=False)
    key_id: str | None = None  # the `kid` of the assertion's header, when the provider needs one
    method: str | None = None  # configured; None chooses from the provider's metadata

    def choose(self, supported: Sequence[str] | None) -> str:
        """The method to use with a provider that advertises `supported` (None: it says nothing)."""
        if self.method:
            return self.method
        if self.private_key is not None:
            return "private_key_jwt"
        if not self.secret:
            return "none"
        if supported is None or "client_secret_basic" in supported:
            return "client_secret_basic"
        if "client_secret_post" in supported:
            return "client_secret_post"
        return "client_secret_basic"  # the RFC's default: let the provider say what it refuses

    def authenticate(
        self, method: str, form: dict[str, str], *, endpoint: str
    ) -> tuple[dict[str, str], httpx2.BasicAuth | None]:
        """The form and the Basic auth (if any) of one request to `endpoint` made with `method`."""
        if method == "client_secret_basic":
            return form, httpx2.BasicAuth(quote(self.client_id, safe=""), quote(self._secret(), safe=""))
        if method == "client_secret_post":
            return {**form, "client_id": self.client_id, "client_secret": self._secret()}, None
        if method == "private_key_jwt":
            assertion = {
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(endpoint),
            }
            return {**form, "client_id": self.client_id, **assertion}, None
        if method == "none":
            return {**form, "client_id": self.client_id}, None
        raise ClientAuthError(f"unsupported client authentication method {method}")

    def assertion(self, audience: str) -> str:
        """RFC 7523 §3: a one-use JWT that proves the bot holds its private key."""
        if self.private_key is None:
            raise ClientAuthError("private_key_jwt needs a private key (OAUTH_CLIENT_PRIVATE_KEY)")
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
            "jti": secrets.token_urlsafe(24),
        }
        headers = {"typ": "JWT", **({"kid": self.key_id} if self.key_id else {})}
        return jwt.encode(
            claims, self.private_key, algorithm=signing_algorithm(self.private_key), headers=headers
        )

    def _secret(self) -> str:
        if not self.secret:
            raise ClientAuthError(
                "this client authentication method needs a client secret (OAUTH_CLIENT_SECRET)"
            )
        return self.secret
