"""How the bot authenticates to a token endpoint (RFC 6749 §2.3, RFC 7523 §2.2): one value per client.

`ClientCredentials.apply(form, audience=...)` adds what the method needs to a token request's form and
returns the headers to send with it:
- `client_secret_basic`: `Authorization: Basic` of the form-urlencoded id and secret (RFC 6749 §2.3.1);
- `client_secret_post`: `client_id` and `client_secret` in the form;
- `private_key_jwt`: a short-lived assertion signed with the client's key, `aud` = the authorization server's
  issuer (RFC 7523bis), `iss` = `sub` = the client id, a fresh `jti`;
- `none` (public clients: PKCE alone): `client_id` in the form.
`choose_method` picks from what the authorization server lists (RFC 8414's default when it lists nothing is
`client_secret_basic`) and what the client has.

Secrets never appear in a repr. Errors: `ClientAuthError`, safe to show.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

__all__ = ["AuthMethod", "ClientAuthError", "ClientCredentials", "choose_method"]

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
ASSERTION_LIFETIME_SECONDS = 60
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_CURVE_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class ClientAuthError(Exception):
    """The client cannot authenticate the way the authorization server requires; safe to show."""


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    method: AuthMethod
    secret: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)  # PEM, for private_key_jwt

    def apply(self, form: dict[str, str], *, audience: str) -> dict[str, str]:
        """Add this client's authentication to `form`; return the headers the request needs."""
        if self.method == "client_secret_basic":
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._need(self.secret, 'a secret'))}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
        form["client_id"] = self.client_id
        if self.method == "client_secret_post":
            form["client_secret"] = self._need(self.secret, "a secret")
        elif self.method == "private_key_jwt":
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.assertion(audience)
        return {}

    def assertion(self, audience: str) -> str:
        pem = self._need(self.private_key, "a private key")
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            raise ClientAuthError("the client's private key is not a readable PEM key") from None
        if isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALGS:
            alg = _CURVE_ALGS[key.curve.name]
        else:
            raise ClientAuthError("the client's private key must be RSA or EC (P-256/384/521)")
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
            "jti": secrets.token_urlsafe(24),
        }
        return jwt.encode(claims, key, algorithm=alg)

    def _need(self, value: str | None, what: str) -> str:
        if not value:
            raise ClientAuthError(f"client {self.client_id!r} uses {self.method} but has no {what}")
        return value


def choose_method(supported: Sequence[str] | None, *, secret: bool, key: bool) -> AuthMethod:
    """The method to use with an authorization server that lists `supported` (None: it lists nothing, which
    RFC 8414 reads as `client_secret_basic`), given whether the client has a secret and/or a private key."""
    offered = list(supported) if supported else ["client_secret_basic"]
    ours: list[AuthMethod] = []
    if key:
        ours.append("private_key_jwt")
    if secret:
        ours += ["client_secret_basic", "client_secret_post"]
    if not secret and not key:
        ours.append("none")
    for method in ours:
        if method in offered:
            return method
    raise ClientAuthError(
        f"the authorization server accepts {', '.join(offered)}, and this client can do {', '.join(ours)}"
    )
