"""Who a chat user is, as the chat's own profile says: what account linking compares a sign-in with.

The Slack edge answers it (bot.slack_people.SlackPeople, users.info).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["People", "PeopleUnavailable", "SlackPerson"]


class PeopleUnavailable(Exception):
    """The chat could not be asked right now (or does not know the user); safe to show."""


@dataclass(frozen=True)
class SlackPerson:
    user: str
    name: str  # what people call them in Slack, for pages a human reads
    email: str  # "" when the profile shows none


class People(Protocol):
    async def person(self, user: str) -> SlackPerson: ...
