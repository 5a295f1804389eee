"""What a process checks before it starts, in one order and one wording for `serve`, `worker` and `doctor`
(SPEC §3): first every setting (`load_settings`: all problems at once), then the services it cannot work
without, Redis then Slack. Each failure is one `ConfigError` naming the variable to fix: the CLI prints it
as one line and exits 2, never with a traceback.

The registry, the identity provider and the model are checked by `doctor` only: the bot keeps working
through their outages (a stale registry copy, retried model calls), so a worker restarted while one of them
is down must still start.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from redis.exceptions import RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.identity import BotIdentity
from bot.redis_check import require_safe_redis
from bot.redis_clients import is_sentinel, parse_sentinel_url, sync_client
from bot.settings import ConfigError, Settings

__all__ = ["DEFAULT_SLACK_API_URL", "check_redis", "preflight", "redis_unreachable", "whoami"]

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
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


def preflight(settings: Settings) -> BotIdentity:
    """The services `serve` and `worker` need, in doctor's order: Redis, then Slack."""
    check_redis(settings)
    return whoami(settings)
