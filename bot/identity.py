"""Who the bot is in Slack, asked once at start (auth.test), not on every request."""

from __future__ import annotations

from bot.preflight import whoami

__all__ = ["whoami"]
