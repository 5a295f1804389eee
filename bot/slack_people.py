"""Who a Slack user is, as Slack's profile says (users.info): the name to show and the email to match.

Account linking asks this once per sign-in to confirm that the person who signed in at the identity provider
is the Slack user the Connect link was made for (SPEC §5). The email needs the `users:read.email` scope; a
profile without one (the scope missing, a guest, a bot) reads as an empty email, which linking refuses.
"""

from __future__ import annotations

from typing import Any

from bot.poster import Poster, PostError
from flows.people import People, PeopleUnavailable, SlackPerson

__all__ = ["People", "PeopleUnavailable", "SlackPeople", "SlackPerson"]


class SlackPeople:
    def __init__(self, poster: Poster) -> None:
        self._poster = poster

    async def person(self, user: str) -> SlackPerson:
        try:
            answer = await self._poster.call("users.info", user=user)
        except PostError as exc:
            raise PeopleUnavailable(f"Slack did not say who {user} is ({exc.error})") from None
        return person_from(user, answer.get("user"))


def person_from(user: str, found: Any) -> SlackPerson:
    """A users.info `user` object read defensively: Slack omits fields freely."""
    if not isinstance(found, dict) or found.get("deleted") or found.get("is_bot"):
        # A deactivated account or a bot is nobody who may link a company identity.
        return SlackPerson(user, user, "")
    profile: dict[str, Any] = found["profile"] if isinstance(found.get("profile"), dict) else {}
    name = next(
        (
            str(v).strip()
            for v in (profile.get("real_name"), profile.get("display_name"), found.get("name"))
            if isinstance(v, str) and v.strip()
        ),
        user,
    )
    email = profile.get("email")
    return SlackPerson(user, name, email.strip() if isinstance(email, str) else "")
