"""What a process checks before it starts, in one order and one wording for `serve`, `worker` and `doctor`
(SPEC §3): first every setting (`load_settings`: all problems at once), then the services it cannot work
without, Redis then Slack, then whether the registry, the identity provider and (for a worker) the model
can be reached at all. Each failure is one `ConfigError` naming the variable to fix: the CLI prints it as
one line and exits 2, never with a traceback.

For those last three, any HTTP answer counts: whether the answers are right (entries, metadata, the key and
model) is `doctor`'s to judge, since a running bot keeps working through their outages (a stale registry
copy, retried model calls). What stops a start is an address nothing answers at: a typo or no route.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2
from redis.exceptions import RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.identity import BotIdentity
from bot.redis_check import require_safe_redis
from bot.redis_clients import is_sentinel, parse_sentinel_url, sync_client
from bot.settings import ConfigError, Settings

__all__ = [
    "DEFAULT_SLACK_API_URL",
    "check_reachable",
    "check_redis",
    "preflight",
    "redis_unreachable",
    "whoami",
]

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"
CONNECT_SECONDS = 5


def check_redis(settings: Settings) -> list[str]:
    """Refuse an unreachable or unsafe Redis (`ConfigError` naming REDIS_URL); return its warnings, unlogged
    (the process logs them once when it checks again at its own start)."""
    connection = sync_client(
        str(settings.redis_url), socket_connect_timeout=CONNECT_SECONDS, socket_timeout=CONNECT_SECONDS
    )
    try:
        return require_safe_redis(connection, log_warnings=False)
    except (RedisError, OSError) as exc:
        raise redis_unreachable(str(settings.redis_url), exc) from None
    finally:
        connection.close()


def redis_unreachable(url: str, exc: BaseException) -> ConfigError:
    """The one line for a Redis that does not answer: where it was looked for (host and port, or the
    socket; never the URL's password) and the kind of failure."""
    parsed = urlsplit(url)
    if is_sentinel(url):
        named = parse_sentinel_url(url)
        hosts = ",".join(f"{host}:{port}" for host, port in named.sentinels)
        where = f"primary {named.service} via Sentinels {hosts}"
    elif parsed.scheme == "unix":
        where = parsed.path
    else:
        where = f"{parsed.hostname}:{parsed.port or 6379}"
    return ConfigError("REDIS_URL", f"Redis at {where} did not answer ({type(exc).__name__})")


def whoami(settings: Settings) -> BotIdentity:
    """Who the bot is in Slack (auth.test), asked once at start, not on every request."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    url = str(settings.slack_api_url)
    client = WebClient(token=token, base_url=url, timeout=10)
    try:
        data = client.auth_test()
    except SlackApiError as exc:
        raise ConfigError("SLACK_BOT_TOKEN", f"Slack refused it ({exc.response.get('error')})") from None
    except OSError as exc:
        # Named even when unset: it is the variable that says where Slack is, and its default may be
        # unreachable from here (no route out, a proxy needed).
        where = f"{url} (the default)" if url == DEFAULT_SLACK_API_URL else url
        raise ConfigError(
            "SLACK_API_URL", f"Slack at {where} cannot be reached ({type(exc).__name__}); check the network"
        ) from None
    return BotIdentity(
        team=str(data["team_id"]), user_id=str(data["user_id"]), bot_id=str(data.get("bot_id") or "")
    )


def check_reachable(settings: Settings, *, model: bool) -> None:
    """The registry, the identity provider and (`model`) the Messages API answer at their addresses, in
    doctor's order; the first that does not is one `ConfigError` naming its variable."""
    places: list[tuple[str, str, object]] = [
        ("REGISTRY_URL", "the registry", settings.registry_url),
        ("OAUTH_ISSUER", "the identity provider", settings.oauth_issuer),
    ]
    if model and settings.anthropic_api_key is not None:
        places.append(
            ("ANTHROPIC_BASE_URL", "the Messages API", settings.anthropic_base_url or DEFAULT_ANTHROPIC_URL)
        )
    with httpx2.Client(timeout=CONNECT_SECONDS, follow_redirects=False) as http:
        for variable, what, url in places:
            if url is None:
                continue
            try:
                http.get(str(url))
            except (httpx2.HTTPError, OSError) as exc:
                raise ConfigError(
                    variable, f"{what} at {url} cannot be reached ({type(exc).__name__}); check the address"
                ) from None


def preflight(settings: Settings, *, model: bool = False) -> BotIdentity:
    """The services `serve` and `worker` (`model`: it runs turns) need, in doctor's order: Redis, Slack,
    then the registry, the identity provider and the model answering at their addresses."""
    check_redis(settings)
    bot = whoami(settings)
    check_reachable(settings, model=model)
    return bot
