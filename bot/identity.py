"""Who the bot is in its workspace (auth.test's answer), as every process and flow names it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BotIdentity"]


@dataclass(frozen=True)
class BotIdentity:
    team: str
    user_id: str
    bot_id: str
