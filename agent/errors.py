"""The loop's errors: what a model adapter raises when the model cannot answer.

    ModelUnavailable(kind)   kind: rate_limited | overloaded | spend_limit | timeout | connection | error

The loop turns it into `Failed("model_unavailable")`; its message is written for the person in Slack, and
whatever the adapter's SDK said stays in the adapter's log (llm.anthropic).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ModelUnavailable", "UnavailableKind"]

UnavailableKind = Literal["rate_limited", "overloaded", "spend_limit", "timeout", "connection", "error"]

_MESSAGES: dict[str, str] = {
    "rate_limited": "The model service is rate-limiting this bot right now. Please try again in a minute.",
    "overloaded": "The model service is overloaded right now. Please try again in a few minutes.",
    "spend_limit": (
        "This bot has reached its model usage limit, so I can't answer until an admin raises it."
    ),
    "timeout": "The model service did not answer in time. Please try again.",
    "connection": "I could not reach the model service. Please try again shortly.",
    "error": "The model service returned an error. Please try again, or tell the bot's admins if it lasts.",
}


class ModelUnavailable(Exception):
    """The model could not answer; `str(exc)` is safe to show to the user."""

    def __init__(self, kind: UnavailableKind, message: str | None = None) -> None:
        self.kind: UnavailableKind = kind
        self.message = message or _MESSAGES[kind]
        super().__init__(self.message)
