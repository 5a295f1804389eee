"""How the bot authenticates to its provider: client_secret_basic, client_secret_post, private_key_jwt."""

from __future__ import annotations

import base64

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mcp_clients.oauth_client_auth import ASSERTION_TYPE, ClientCredentials, load_private_key, public_jwk

TOKEN_URL = "https://id.example.com/oauth2/v1/token"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_basic_authentication_form_urlencodes_the_id_and_secret_first() -> None:
    form, basic = ClientCredentials("chat ops", "s3cr:t%").authenticate(
        "client_secret_basic", {"grant_type": "refresh_token"}, endpoint=TOKEN_URL
    )
    assert form == {"grant_type": "refresh_token"}  # nothing secret in the body
    assert basic is not None
    header = next(basic.auth_flow(httpx2.Request("POST", TOKEN_URL))).headers["Authorization"]
    assert base64.b64decode(header.split()[1]).decode() == "chat%20ops:s3cr%3At%25"


def test_post_authentication_puts_the_id_and_secret_in_the_form() -> None:
    form, basic = ClientCredentials("chatops", "s3cret").authenticate(
        "client_secret_post", {}, endpoint=TOKEN_URL
    )
    assert (form, basic) == ({"client_id": "chatops", "client_secret": "s3cret"}, None)


@pytest.mark.parametrize("curve", [None, ec.SECP256R1()])
def test_a_private_key_jwt_assertion_is_signed_one_use_and_names_the_endpoint(
    curve: ec.EllipticCurve | None,
) -> None:
    key = rsa.generate_private_key(65537, 2048) if curve is None else ec.generate_private_key(curve)
    credentials = ClientCredentials("chatops", None, load_private_key(pem(key)), key_id="k1")
    form, basic = credentials.authenticate(
        "private_key_jwt", {"grant_type": "refresh_token"}, endpoint=TOKEN_URL
    )
    again, _ = credentials.authenticate("private_key_jwt", {}, endpoint=TOKEN_URL)
    assert basic is None
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert "client_secret" not in form
    public = jwt.PyJWK(public_jwk(credentials.private_key, "k1"))  # type: ignore[arg-type]
    claims = jwt.decode(form["client_assertion"], public, algorithms=["RS256", "ES256"], audience=TOKEN_URL)
    assert (claims["iss"], claims["sub"]) == ("chatops", "chatops")
    assert 0 < claims["exp"] - claims["iat"] <= 60
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"
    assert jwt.decode(again["client_assertion"], options={"verify_signature": False})["jti"] != claims["jti"]


def test_the_method_is_the_configured_one_else_the_key_else_what_the_provider_lists() -> None:
    key = load_private_key(pem(rsa.generate_private_key(65537, 2048)))
    assert ClientCredentials("c", "s", method="client_secret_post").choose(None) == "client_secret_post"
    assert (
        ClientCredentials("c", "s", key).choose(["client_secret_basic", "private_key_jwt"])
        == "private_key_jwt"
    )
    assert ClientCredentials("c", "s").choose(None) == "client_secret_basic"  # RFC 8414's default
    assert (
        ClientCredentials("c", "s").choose(["client_secret_post", "private_key_jwt"]) == "client_secret_post"
    )
    assert ClientCredentials("c", None).choose(["none"]) == "none"


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "not pem at all",
        pem(rsa.generate_private_key(65537, 1024)),
    ],
)
def test_a_key_that_cannot_sign_is_refused_without_quoting_it(text: str) -> None:
    with pytest.raises(ValueError, match="PEM private key|RSA key shorter") as info:
        load_private_key(text)
    assert text.strip()[:30] not in str(info.value)
