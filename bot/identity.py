"""Who the bot is in Slack, asked once at start (auth.test), not on every request."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.settings import ConfigError, Settings

__all__ = ["BotIdentity", "whoami"]


@dataclass(frozen=True)
class BotIdentity:
    team: str
    user_id: str
    bot_id: str


def whoami(settings: Settings) -> BotIdentity:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    client = WebClient(token=token, base_url=str(settings.slack_api_url), timeout=10)
    try:
        data = client.auth_test()
    except SlackApiError as exc:
        raise ConfigError("SLACK_BOT_TOKEN", f"Slack refused it ({exc.response.get('error')})") from None
    except OSError as exc:
        raise ConfigError("SLACK_API_URL", f"Slack cannot be reached ({type(exc).__name__})") from None
    return BotIdentity(
        team=str(data["team_id"]), user_id=str(data["user_id"]), bot_id=str(data.get("bot_id") or "")
    )
