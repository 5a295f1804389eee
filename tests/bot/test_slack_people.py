"""Who a Slack user is, read from users.info (bot.slack_people): the name people know, the email to match."""

from __future__ import annotations

from bot.slack_people import SlackPerson, person_from
from fixtures.slack_world import user_object


def test_a_person_reads_as_their_real_name_and_profile_email() -> None:
    assert person_from("U0DAVE", user_object("U0DAVE")) == SlackPerson(
        "U0DAVE", "Dave Diaz", "dave@example.com"
    )


def test_a_bot_a_deactivated_account_or_a_strange_answer_has_no_email_to_match() -> None:
    assert person_from("U0CHATOPS", user_object("U0CHATOPS")).email == ""
    deactivated = {**(user_object("U0DAVE") or {}), "deleted": True}
    assert person_from("U0DAVE", deactivated).email == ""
    assert person_from("U0X", None) == SlackPerson("U0X", "U0X", "")
    assert person_from("U0X", {"name": "x", "profile": "not a profile"}) == SlackPerson("U0X", "x", "")


def test_the_name_falls_back_from_real_name_to_display_name_to_handle() -> None:
    found = {"name": "dd", "profile": {"real_name": " ", "display_name": "dave", "email": " Dave@x.example "}}
    assert person_from("U0DAVE", found) == SlackPerson("U0DAVE", "dave", "Dave@x.example")
