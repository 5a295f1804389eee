"""Settings: read once, typed, secrets masked, one clear line per problem (SPEC §3)."""

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.settings import ConfigError, Role, load_settings

KEY = Fernet.generate_key().decode()

FULL = {
    "SLACK_BOT_TOKEN": "xoxb-1-secret-bot",
    "SLACK_SIGNING_SECRET": "signing-secret-value",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "REGISTRY_URL": "http://127.0.0.1:9/",
    "OAUTH_ISSUER": "http://127.0.0.1:8/",
    "OAUTH_CLIENT_ID": "chatops-bot",
    "OAUTH_CLIENT_SECRET": "client-secret-value",
    "CHATOPS_SECRET_KEY": KEY,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_defaults_follow_the_spec() -> None:
    s = load_settings(Role.WEB_HTTP, env=FULL)
    assert s.approval_ttl_seconds == 3600
    assert s.registry_ttl_seconds == 60
    assert s.registry_stale_max_seconds == 900
    assert s.port == 3000
    assert s.workflows_dir == "./workflows"
    assert s.base_url == "http://localhost:3000"
    assert s.oauth_redirect_uri == "http://localhost:3000/oauth/callback"
    assert str(s.slack_api_url) == "https://slack.com/api/"


def test_secrets_never_appear_in_repr_or_str() -> None:
    s = load_settings(Role.WEB_HTTP, env=FULL)
    shown = repr(s) + str(s) + str(s.model_dump())
    for secret in ("xoxb-1-secret-bot", "signing-secret-value", "sk-ant-secret", "client-secret-value", KEY):
        assert secret not in shown


@pytest.mark.parametrize(
    ("role", "missing"),
    [
        (Role.WEB_HTTP, "SLACK_SIGNING_SECRET"),
        (Role.WEB_HTTP, "REGISTRY_URL"),
        (Role.WORKER, "ANTHROPIC_API_KEY"),
        (Role.WORKER, "CHATOPS_SECRET_KEY"),
        (Role.WEB_SOCKET, "SLACK_APP_TOKEN"),
        (Role.WEB_HTTP, "REDIS_URL"),
    ],
)
def test_a_missing_setting_is_named(role: Role, missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        load_settings(role, env=env)
    assert info.value.variable == missing
    assert str(info.value).startswith(f"{missing}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("APPROVAL_TTL_SECONDS", "-5"),
        ("REGISTRY_URL", "not a url"),
        ("SLACK_BOT_TOKEN", "xoxp-user-token"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("CHATOPS_SECRET_KEY", "too-short-secret"),
    ],
)
def test_a_malformed_setting_is_named_without_echoing_secrets(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WEB_HTTP, env={**FULL, variable: value})
    assert info.value.variable == variable
    if variable in ("SLACK_BOT_TOKEN", "CHATOPS_SECRET_KEY"):
        assert value not in str(info.value)


def test_secret_key_list_rotates_first_encrypts() -> None:
    second = Fernet.generate_key().decode()
    s = load_settings(Role.WEB_HTTP, env={**FULL, "CHATOPS_SECRET_KEY": f"{KEY}, {second}"})
    assert [k.get_secret_value() for k in s.chatops_secret_key] == [KEY, second]


def test_dev_role_needs_no_secrets() -> None:
    s = load_settings(Role.DEV, env={})
    assert s.redis_url is None
    assert s.chatops_secret_key == ()


def test_empty_values_in_a_dotenv_mean_unset() -> None:
    with pytest.raises(ConfigError, match="^SLACK_SIGNING_SECRET: "):
        load_settings(Role.WEB_HTTP, env={**FULL, "SLACK_SIGNING_SECRET": " "})


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("", True), ("false", False), ("0", False), ("TRUE", True)]
)
def test_email_matching_at_linking_is_on_unless_turned_off(value: str | None, expected: bool) -> None:
    env = FULL if value is None else {**FULL, "OAUTH_MATCH_EMAIL": value}
    assert load_settings(Role.WEB_HTTP, env=env).oauth_match_email is expected


def test_a_malformed_email_matching_switch_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WEB_HTTP, env={**FULL, "OAUTH_MATCH_EMAIL": "sometimes"})
    assert info.value.variable == "OAUTH_MATCH_EMAIL"


def private_key_pem(bits: int = 2048) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_the_company_provider_settings_default_to_the_spec() -> None:
    s = load_settings(Role.WEB_HTTP, env=FULL)
    assert (s.oauth_scopes, s.oauth_groups_claim, s.oauth_email_claim) == (None, "groups", "email")
    assert (s.oauth_token_auth_method, s.oauth_private_key) == (None, None)


def test_provider_claim_paths_and_scopes_are_read_as_given() -> None:
    env = {
        **FULL,
        "OAUTH_SCOPES": "openid  offline_access groups openid",
        "OAUTH_GROUPS_CLAIM": "https://example.com/groups",
        "OAUTH_EMAIL_CLAIM": "upn",
    }
    s = load_settings(Role.WEB_HTTP, env=env)
    assert s.oauth_scopes == "openid offline_access groups"
    assert (s.oauth_groups_claim, s.oauth_email_claim) == ("https://example.com/groups", "upn")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OAUTH_SCOPES", 'openid "groups"', "scope names"),
        ("OAUTH_GROUPS_CLAIM", "realm access.roles", "claim name"),
        ("OAUTH_EMAIL_CLAIM", "email.", "claim name"),
        ("OAUTH_TOKEN_AUTH_METHOD", "client_secret_jwt", "client_secret_basic"),
        (
            "OAUTH_CLIENT_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
            "PEM",
        ),
        ("OAUTH_CLIENT_PRIVATE_KEY_FILE", "/nonexistent/chatops.pem", "cannot be read"),
    ],
)
def test_a_malformed_provider_setting_is_named_with_what_is_wrong(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WEB_HTTP, env={**FULL, variable: value})
    assert info.value.variable == variable
    assert says in str(info.value)
    assert "c2VjcmV0" not in str(info.value)  # a key is never echoed, even a broken one


def test_a_private_key_replaces_the_client_secret_and_private_key_jwt_needs_one(tmp_path: Path) -> None:
    no_secret = {k: v for k, v in FULL.items() if k != "OAUTH_CLIENT_SECRET"}
    pem = private_key_pem()
    s = load_settings(Role.WORKER, env={**no_secret, "OAUTH_CLIENT_PRIVATE_KEY": pem})
    assert s.oauth_private_key is not None
    assert pem not in repr(s) + str(s.model_dump())
    key_file = tmp_path / "chatops.pem"
    key_file.write_text(pem)
    from_file = load_settings(Role.WORKER, env={**no_secret, "OAUTH_CLIENT_PRIVATE_KEY_FILE": str(key_file)})
    assert from_file.oauth_private_key is not None
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WORKER, env={**FULL, "OAUTH_TOKEN_AUTH_METHOD": "private_key_jwt"})
    assert info.value.variable == "OAUTH_CLIENT_PRIVATE_KEY"
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WORKER, env=no_secret)
    assert info.value.variable == "OAUTH_CLIENT_SECRET"
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WORKER, env={**FULL, "OAUTH_CLIENT_KEY_ID": "k1"})
    assert info.value.variable == "OAUTH_CLIENT_KEY_ID"
    both = {**no_secret, "OAUTH_CLIENT_PRIVATE_KEY": pem, "OAUTH_CLIENT_PRIVATE_KEY_FILE": str(key_file)}
    with pytest.raises(ConfigError) as info:
        load_settings(Role.WORKER, env=both)
    assert info.value.variable == "OAUTH_CLIENT_PRIVATE_KEY_FILE"


def test_model_prices_come_over_the_defaults_and_a_bad_one_is_named() -> None:
    s = load_settings(Role.WORKER, env={**FULL, "CHATOPS_MODEL_PRICES": '{"claude-sonnet-5-5": 2.5}'})
    assert s.prices["claude-sonnet-5-5"].input_per_mtok == 2.5
    assert s.prices["claude-haiku-4-5"].input_per_mtok == 1.0  # a default still there
    for bad in ('{"claude-x": -1}', "[1]", "not json"):
        with pytest.raises(ConfigError) as info:
            load_settings(Role.WORKER, env={**FULL, "CHATOPS_MODEL_PRICES": bad})
        assert info.value.variable == "CHATOPS_MODEL_PRICES"
