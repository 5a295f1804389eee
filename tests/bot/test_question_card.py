"""The question card in Slack's words (bot/question_card.py): who asks whom, what the buttons do, and what a
link question shows before anyone opens it."""

from __future__ import annotations

import json

from approvals.turns import Turn
from bot.blocks import Message
from bot.question_card import (
    ANSWER_ACTION,
    DONE_ACTION,
    LINK_ACTION,
    closed_card,
    form_view,
    question_card,
)
from flows.server_questions import Unaskable
from mcp_clients.questions import Question

FORM = {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}


def turn() -> Turn:
    return Turn("t1", "T1", "C1", "channel", "U0ALICE", "hi", "1.0", "1.0", 0.0)


def test_a_form_question_names_the_server_the_person_and_the_tool_and_escapes_the_servers_words() -> None:
    asked = Question("presto", "kill_query", "form", "Sure? <!channel> *now*", schema=FORM)
    card = question_card(turn(), "q1", asked, 600)
    assert isinstance(card, Message)
    shown = json.dumps(card.blocks)
    assert "*presto* asks <@U0ALICE> while running `kill_query`" in shown
    assert "<!channel>" not in shown  # the server's text cannot ping the channel
    assert "no answer within 10 minutes cancels it" in shown
    actions = [e["action_id"] for b in card.blocks if b["type"] == "actions" for e in b["elements"]]
    assert actions == [ANSWER_ACTION, "question_decline", "question_cancel"]
    assert all(e["value"] == "q1" for b in card.blocks if b["type"] == "actions" for e in b["elements"])


def test_a_link_question_shows_where_the_link_goes_and_asks_for_done() -> None:
    asked = Question("billing", None, "url", "Authorize billing", url="https://pay.example.com/auth?x=1")
    card = question_card(turn(), "q2", asked, 90)
    assert isinstance(card, Message)
    buttons = [e for b in card.blocks if b["type"] == "actions" for e in b["elements"]]
    assert buttons[0]["action_id"] == LINK_ACTION
    assert buttons[0]["url"] == "https://pay.example.com/auth?x=1"
    assert "pay.example.com" in buttons[0]["text"]["text"]
    assert buttons[1]["action_id"] == DONE_ACTION
    assert "2 minutes" in json.dumps(card.blocks)


def test_a_link_that_is_not_a_web_address_and_an_unaskable_form_are_refused_with_the_reason() -> None:
    link = Question("x", None, "url", "go", url="javascript:alert(1)")
    assert question_card(turn(), "q3", link, 60) == Unaskable("its link is not a web address")
    nested = Question(
        "x", None, "form", "where?", schema={"type": "object", "properties": {"a": {"type": "object"}}}
    )
    refused = question_card(turn(), "q4", nested, 60)
    assert isinstance(refused, Unaskable)
    assert "nested object" in refused.reason
    assert form_view("q4", "x", "where?", nested.schema) is None


def test_a_closed_card_says_what_happened_and_has_no_buttons() -> None:
    asked = Question("presto", None, "form", "Sure?", schema=FORM)
    for outcome, said in (
        ("accept", "<@U0ALICE> answered."),
        ("decline", "<@U0ALICE> declined to answer."),
        ("timeout", "No answer within 10 minutes: cancelled."),
        ("ended", "The request ended before an answer: cancelled."),
    ):
        card = closed_card(turn(), asked, outcome, 600)
        assert said in json.dumps(card.blocks)
        assert not any(b["type"] == "actions" for b in card.blocks)
