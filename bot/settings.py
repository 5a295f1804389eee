"""Typed configuration, read once per process from the environment (and `.env` in the working directory).

SPEC §3 is the contract: a missing or malformed setting stops the process at start with one line naming the
variable (`ConfigError`). Which settings are required depends on what the process does (`Role`): the signing
secret only for HTTP mode, the model key only where agent turns run, the secret key everywhere except the
embedded `--dev`/`demo` world. Secrets are `SecretStr`, so no repr, log line or traceback shows them.
"""

from __future__ import annotations

import enum
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.usage import DEFAULT_PRICES, Price, parse_prices_json
from approvals.replication import Replication
from bot.config_errors import ConfigError, ConfigErrors, raise_all
from bot.config_errors import malformed as malformed_settings
from bot.redis_clients import SENTINEL_SCHEMES, parse_sentinel_url
from mcp_clients.claims import valid_claim_path
from mcp_clients.oauth_client_auth import PrivateKey, load_private_key

__all__ = ["DEFAULT_MODEL", "ConfigError", "ConfigErrors", "Role", "Settings", "load_settings"]

DEFAULT_MODEL = "claude-sonnet-5-5"
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class Role(enum.Enum):
    """What the process is for; decides which settings must be present."""

    WEB_HTTP = "web"
    WEB_SOCKET = "web-socket-mode"
    WORKER = "worker"
    CLI = "cli"  # audit, stats, registry, doctor: no Slack ingress, no agent turns
    DEV = "dev"  # --dev / demo: embedded Redis and fixture world allowed, secret key optional


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: AnyHttpUrl = Field(default=AnyHttpUrl("https://slack.com/api/"), alias="SLACK_API_URL")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: AnyHttpUrl | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    chatops_model: str = Field(default=DEFAULT_MODEL, alias="CHATOPS_MODEL", min_length=1)
    # Plain text on purpose (every Redis client takes the URL as is), but it may carry a password: keep it out
    # of repr(). TLS options ride in the URL too, e.g. rediss://:pw@host:6380/0?ssl_ca_certs=/etc/ca.pem.
    # redis+sentinel://h1:26379,h2:26379/mymaster/0 names Sentinels instead (bot.redis_clients).
    redis_url: str | None = Field(default=None, alias="REDIS_URL", repr=False)
    # A start of an approved action waits for this many replicas to hold it (Redis WAIT) before the tool is
    # called, so that a failover cannot bring it back to run twice. Unset: 1 under Sentinel, else 0 (a
    # single Redis has no replica to wait for). REDIS_REPLICA_WAIT_MS: how long, before the start fails.
    redis_min_replicas: int | None = Field(default=None, alias="REDIS_MIN_REPLICAS", ge=0, le=16)
    redis_replica_wait_ms: int = Field(default=2000, alias="REDIS_REPLICA_WAIT_MS", ge=10, le=60000)
    registry_url: AnyHttpUrl | None = Field(default=None, alias="REGISTRY_URL")
    oauth_issuer: AnyHttpUrl | None = Field(default=None, alias="OAUTH_ISSUER")
    oauth_client_id: str | None = Field(default=None, alias="OAUTH_CLIENT_ID")
    oauth_client_secret: SecretStr | None = Field(default=None, alias="OAUTH_CLIENT_SECRET")
    # Linking requires the provider's email to equal the Slack profile's; false: the person confirms instead.
    oauth_match_email: bool = Field(default=True, alias="OAUTH_MATCH_EMAIL")
    # Providers differ (SPEC §3, §5): the scopes to ask at linking (unset: the base scopes plus a groups scope
    # the provider lists), where groups and email are in its claims, and how the bot authenticates to it.
    oauth_scopes: str | None = Field(default=None, alias="OAUTH_SCOPES")
    oauth_groups_claim: str = Field(default="groups", alias="OAUTH_GROUPS_CLAIM")
    oauth_email_claim: str = Field(default="email", alias="OAUTH_EMAIL_CLAIM")
    oauth_token_auth_method: (
        Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] | None
    ) = Field(default=None, alias="OAUTH_TOKEN_AUTH_METHOD")
    # A PEM private key for private_key_jwt (RFC 7523), given inline or as a file; OAUTH_CLIENT_KEY_ID is the
    # `kid` to name in its assertions when the provider holds several keys for the bot.
    oauth_client_private_key: SecretStr | None = Field(default=None, alias="OAUTH_CLIENT_PRIVATE_KEY")
    oauth_client_private_key_file: SecretStr | None = Field(
        default=None, alias="OAUTH_CLIENT_PRIVATE_KEY_FILE"
    )
    oauth_client_key_id: str | None = Field(default=None, alias="OAUTH_CLIENT_KEY_ID")
    public_url: AnyHttpUrl | None = Field(default=None, alias="PUBLIC_URL")
    chatops_secret_key: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), alias="CHATOPS_SECRET_KEY"
    )
    approval_ttl_seconds: int = Field(default=3600, alias="APPROVAL_TTL_SECONDS", ge=10, le=7 * 86400)
    approvals_channel: str | None = Field(
        default=None, alias="APPROVALS_CHANNEL", pattern=r"^[CGD][A-Z0-9]+$"
    )
    workflows_dir: str = Field(default="./workflows", alias="WORKFLOWS_DIR")
    registry_ttl_seconds: int = Field(default=60, alias="REGISTRY_TTL_SECONDS", ge=1, le=86400)
    registry_stale_max_seconds: int = Field(
        default=900, alias="REGISTRY_STALE_MAX_SECONDS", ge=0, le=7 * 86400
    )
    port: int = Field(default=3000, alias="PORT", ge=1, le=65535)
    # Extensions beyond SPEC §3 (documented in the README): agent caps, audit retention, logging.
    max_steps: int = Field(default=12, alias="CHATOPS_MAX_STEPS", ge=1, le=100)
    max_turn_seconds: int = Field(default=300, alias="CHATOPS_MAX_TURN_SECONDS", ge=5, le=3600)
    max_output_tokens: int = Field(default=4096, alias="CHATOPS_MAX_OUTPUT_TOKENS", ge=256, le=64000)
    tool_output_max_chars: int = Field(
        default=20000, alias="CHATOPS_TOOL_OUTPUT_MAX_CHARS", ge=1000, le=1_000_000
    )
    # Files attached to a question (bot.attachments): a text file is cut at this many bytes (the cut is stated
    # to the model); every download is bounded by the timeout.
    file_text_max_bytes: int = Field(
        default=100_000, alias="CHATOPS_FILE_TEXT_MAX_BYTES", ge=1000, le=10_000_000
    )
    file_timeout_seconds: float = Field(default=15.0, alias="CHATOPS_FILE_TIMEOUT_SECONDS", gt=0, le=300)
    user_turns_per_minute: int = Field(default=10, alias="CHATOPS_USER_TURNS_PER_MINUTE", ge=1, le=100_000)
    # How long the lease of running work (a turn, a workflow run, an approved action) lasts without renewal
    # (renewed every third of it): a worker that dies mid-way is noticed by the sweep after at most this
    # long, plus the sweep interval.
    turn_lease_seconds: int = Field(default=60, alias="CHATOPS_TURN_LEASE_SECONDS", ge=3, le=3600)
    # Turns one turn pool runs at once (`chatops worker --turns` overrides it). A turn is mostly waiting for
    # the model and tools, so this is bounded by the model's rate limits more than by this machine.
    turn_concurrency: int = Field(default=16, alias="CHATOPS_TURN_CONCURRENCY", ge=1, le=512)
    # Answers streamed with Slack's streaming methods (falling back to message updates by itself where Slack
    # refuses); false always uses message updates.
    streaming: bool = Field(default=True, alias="CHATOPS_STREAMING")
    # How long a server's question (MCP elicitation) waits for its person's answer before it is cancelled;
    # the request's own time limit (CHATOPS_MAX_TURN_SECONDS) may end it sooner.
    elicitation_timeout_seconds: int = Field(
        default=600, alias="CHATOPS_ELICITATION_TIMEOUT_SECONDS", ge=1, le=3600
    )
    audit_retention_days: int = Field(default=400, alias="AUDIT_RETENTION_DAYS", ge=1, le=3650)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # The model's bill (issue 20; README "The model's bill"). Past the threshold, most tools are found by
    # search: "api" (the Messages API's tool search, defer_loading), "local" (an in-process find_tools, for
    # a gateway without tool search) or "off".
    tool_search: Literal["api", "local", "off"] = Field(default="api", alias="CHATOPS_TOOL_SEARCH")
    tool_search_threshold: int = Field(default=30, alias="CHATOPS_TOOL_SEARCH_THRESHOLD", ge=0, le=10_000)
    # The cache lifetime of the tools and system prompt: "1h" pays where one toolset is busy all day.
    cache_tools_ttl: Literal["5m", "1h"] = Field(default="5m", alias="CHATOPS_CACHE_TOOLS_TTL")
    context_budget_tokens: int = Field(
        default=150_000, alias="CHATOPS_CONTEXT_BUDGET_TOKENS", ge=4_000, le=2_000_000
    )
    # JSON {"model": <$ per million input tokens> | {"input": .., "output_ratio": .., "read_ratio": ..}},
    # merged over agent.usage.DEFAULT_PRICES.
    model_prices: str = Field(default="", alias="CHATOPS_MODEL_PRICES")

    @field_validator(
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "anthropic_api_key",
        "oauth_client_secret",
        "redis_url",
        "redis_min_replicas",
        "oauth_client_id",
        "approvals_channel",
        "public_url",
        "registry_url",
        "oauth_issuer",
        "anthropic_base_url",
        "oauth_scopes",
        "oauth_token_auth_method",
        "oauth_client_private_key",
        "oauth_client_private_key_file",
        "oauth_client_key_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `FOO=` in a .env file means "not set", not "set to the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("oauth_match_email", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any) -> Any:
        # `OAUTH_MATCH_EMAIL=` means "not set": keep the safe default rather than refusing to start.
        return True if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(SENTINEL_SCHEMES):
            parse_sentinel_url(value)  # its ValueError names what is wrong, never the password
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
            )
        return value

    @field_validator("chatops_secret_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        for key in value or ():
            raw = key.get_secret_value() if isinstance(key, SecretStr) else str(key)
            try:
                Fernet(raw.encode())
            except ValueError:
                # Never echo the value: it is a secret even when malformed.
                raise ValueError(
                    "each comma-separated key must be a Fernet key (generate one with `chatops keygen`)"
                ) from None
        return value

    @field_validator("oauth_scopes")
    @classmethod
    def _scope_tokens(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scopes = value.split()
        if not all(_SCOPE_TOKEN.fullmatch(s) for s in scopes):
            raise ValueError("must be scope names separated by spaces (RFC 6749 §3.3)")
        return " ".join(dict.fromkeys(scopes))

    @field_validator("oauth_groups_claim", "oauth_email_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        if not valid_claim_path(value.strip()):
            raise ValueError("must be a claim name or a dotted path to one, without spaces")
        return value.strip()

    @field_validator("oauth_client_private_key")
    @classmethod
    def _pem(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            load_private_key(value.get_secret_value())  # ValueError never quotes the key
        return value

    @field_validator("oauth_client_private_key_file", mode="before")
    @classmethod
    def _pem_file(cls, value: Any) -> Any:
        # Read once, here: the process never goes back to the file, and the key stays a SecretStr.
        if value is None:
            return None
        try:
            pem = Path(str(value)).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot be read ({type(exc).__name__})") from None
        load_private_key(pem)
        return pem

    @field_validator("model_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        parse_prices_json(value)  # ValueError names every bad entry
        return value

    @cached_property
    def prices(self) -> dict[str, Price]:
        """The price table: the defaults for current Claude models, with CHATOPS_MODEL_PRICES over them."""
        return {**DEFAULT_PRICES, **parse_prices_json(self.model_prices)}

    @field_validator("workflows_dir")
    @classmethod
    def _dir_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder")
        return value

    @property
    def redis_replication(self) -> Replication:
        """How many replicas must hold a start before its action runs (approvals.replication)."""
        replicas = self.redis_min_replicas
        if replicas is None:
            replicas = 1 if self.redis_url and self.redis_url.startswith(SENTINEL_SCHEMES) else 0
        return Replication(replicas, self.redis_replica_wait_ms)

    @cached_property
    def base_url(self) -> str:
        """PUBLIC_URL without a trailing slash (default http://localhost:$PORT)."""
        return str(self.public_url or f"http://localhost:{self.port}").rstrip("/")

    @property
    def oauth_redirect_uri(self) -> str:
        return f"{self.base_url}/oauth/callback"

    @cached_property
    def oauth_private_key(self) -> PrivateKey | None:
        """The bot's private key for private_key_jwt, from OAUTH_CLIENT_PRIVATE_KEY or its _FILE."""
        given = self.oauth_client_private_key or self.oauth_client_private_key_file
        return load_private_key(given.get_secret_value()) if given is not None else None

    def _client_auth_problems(self) -> list[ConfigError]:
        """The client authentication settings agree with each other (any role: all of them talk to it)."""
        problems = []
        if self.oauth_client_private_key is not None and self.oauth_client_private_key_file is not None:
            problems.append(
                ConfigError(
                    "OAUTH_CLIENT_PRIVATE_KEY_FILE", "set either it or OAUTH_CLIENT_PRIVATE_KEY, not both"
                )
            )
        method = self.oauth_token_auth_method
        if self.oauth_client_key_id is not None and self.oauth_private_key is None:
            problems.append(
                ConfigError(
                    "OAUTH_CLIENT_KEY_ID", "names the key of OAUTH_CLIENT_PRIVATE_KEY, which is not set"
                )
            )
        if method == "private_key_jwt" and self.oauth_private_key is None:
            problems.append(
                ConfigError(
                    "OAUTH_CLIENT_PRIVATE_KEY",
                    "is required for OAUTH_TOKEN_AUTH_METHOD=private_key_jwt (or its _FILE)",
                )
            )
        if method in ("client_secret_basic", "client_secret_post") and self.oauth_client_secret is None:
            problems.append(
                ConfigError("OAUTH_CLIENT_SECRET", f"is required for OAUTH_TOKEN_AUTH_METHOD={method}")
            )
        return problems

    def problems(self, role: Role) -> list[ConfigError]:
        """Every setting `role` needs that is missing or contradicts another, one error per variable."""
        problems = self._client_auth_problems()
        needed: list[tuple[str, object]] = []
        if role in (Role.WEB_HTTP, Role.WEB_SOCKET, Role.WORKER):
            needed += [
                ("SLACK_BOT_TOKEN", self.slack_bot_token),
                ("REGISTRY_URL", self.registry_url),
                ("OAUTH_ISSUER", self.oauth_issuer),
                ("OAUTH_CLIENT_ID", self.oauth_client_id),
                # A client holding a private key (private_key_jwt) needs no secret.
                ("OAUTH_CLIENT_SECRET", self.oauth_client_secret or self.oauth_private_key),
                ("CHATOPS_SECRET_KEY", self.chatops_secret_key or None),
                ("REDIS_URL", self.redis_url),
            ]
        if role is Role.WEB_HTTP:
            needed.append(("SLACK_SIGNING_SECRET", self.slack_signing_secret))
        if role is Role.WEB_SOCKET:
            needed.append(("SLACK_APP_TOKEN", self.slack_app_token))
        if role is Role.WORKER:
            needed.append(("ANTHROPIC_API_KEY", self.anthropic_api_key))
        if role is Role.CLI:
            needed.append(("REDIS_URL", self.redis_url))
        named = {p.variable for p in problems}
        for variable, value in needed:
            if value is not None or variable in named:
                continue
            if variable == "REDIS_URL":
                problems.append(
                    ConfigError(variable, "is required (embedded Redis is only for `chatops demo` and --dev)")
                )
            else:
                problems.append(ConfigError(variable, "is required"))
        return problems

    def require(self, role: Role) -> Settings:
        """Check that everything `role` needs is present; raise `ConfigError` naming every gap."""
        raise_all(self.problems(role))
        return self


def load_settings(role: Role | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read settings once. Every malformed setting and (for `role`) every missing one is reported together,
    one line per variable (`ConfigErrors`), so one run names everything there is to fix (SPEC §3)."""
    try:
        settings = _read(env, {})
    except ValidationError as exc:
        malformed = malformed_settings(exc)
        # Read again with the malformed ones at their defaults, to also name what is missing.
        defaults = {}
        for info in Settings.model_fields.values():
            if info.alias in {e.variable for e in malformed}:
                defaults[info.alias] = info.get_default(call_default_factory=True)
        try:
            rest = _read(env, defaults).problems(role) if role is not None else []
        except ValidationError:
            rest = []
        named = {e.variable for e in malformed}
        raise_all(malformed + [e for e in rest if e.variable not in named])
        raise  # unreachable: `malformed` is never empty
    return settings.require(role) if role is not None else settings


def _read(env: dict[str, str] | None, overrides: dict[str, Any]) -> Settings:
    if env is None:
        return Settings(**overrides)
    # Explicit environments (tests, the demo) must not pick up a stray .env from the working dir.
    return Settings.model_validate({**env, **overrides}, by_alias=True)
