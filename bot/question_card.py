"""A server's question in Slack, in Slack's words: the card in the thread, the form's modal, the card closed
with its outcome (flows.server_questions.QuestionCards).

The card names the server, the person whose call it is, and the server's message (untrusted: escaped,
secrets redacted); its buttons carry the question id only. A form question has **Answer** (opens the form
as a modal), **Decline** and **Cancel**; a link question has the link as a button (with its host spelled
out: the person sees where it goes before opening it), **Done** (the person went there and finished:
accept), **Decline** and **Cancel**. Closed, the card says what happened and has no live buttons.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from approvals.turns import Turn
from bot.blocks import Message
from bot.poster import Poster
from bot.question_form import form_blocks, form_fields
from bot.slack_text import Mrkdwn, code, ours, trusted, untrusted
from flows.server_questions import Unaskable
from mcp_clients.questions import Question

__all__ = [
    "ANSWER_ACTION",
    "CANCEL_ACTION",
    "DECLINE_ACTION",
    "DONE_ACTION",
    "FORM_CALLBACK_ID",
    "LINK_ACTION",
    "SlackQuestionCards",
    "form_view",
    "only_asker",
]

JSON = dict[str, Any]
ANSWER_ACTION = "question_answer"
DECLINE_ACTION = "question_decline"
CANCEL_ACTION = "question_cancel"
DONE_ACTION = "question_done"
LINK_ACTION = "question_link"
FORM_CALLBACK_ID = "question_form"
MESSAGE_MAX = 2500  # the server's message on the card (a section holds 3000)
_WEB = re.compile(r"https?://[^\s<>|]+", re.I)

OUTCOMES = {
    "accept": "{who} answered.",
    "decline": "{who} declined to answer.",
    "cancel": "{who} cancelled the question.",
    "timeout": "No answer within {minutes}: cancelled.",
    "ended": "The request ended before an answer: cancelled.",
}


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}" if seconds >= 60 else f"{seconds:.0f} seconds"


def _heading(question: Question, user: str) -> Mrkdwn:
    during = ours(" while running {tool}", tool=code(question.tool)) if question.tool else ""
    return ours(":question: *{server}* asks <@" + user + ">{during}:", server=question.server, during=during)


def _section(text: str) -> JSON:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(text: str, action: str, value: str, style: str | None = None, url: str | None = None) -> JSON:
    button: JSON = {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action}
    button["value"] = value
    if style:
        button["style"] = style
    if url:
        button["url"] = url
    return button


def _message(question: Question) -> Mrkdwn:
    text = question.message if len(question.message) <= MESSAGE_MAX else question.message[:MESSAGE_MAX] + "…"
    return untrusted(text)


def question_card(turn: Turn, question_id: str, question: Question, timeout: float) -> Message | Unaskable:
    """The open card, or why the question cannot be shown in Slack."""
    if question.mode == "url":
        url = question.url or ""
        host = urlsplit(url).hostname if _WEB.fullmatch(url) else None
        if not host:
            return Unaskable("its link is not a web address")
        buttons = [
            _button(f"Open {host[:60]}", LINK_ACTION, question_id, "primary", url),
            _button("Done", DONE_ACTION, question_id),
        ]
        where = ours("The link goes to {host}. Press *Done* once you have finished there.", host=code(host))
    else:
        fields = form_fields(question.schema)
        if isinstance(fields, str):
            return Unaskable(fields)
        buttons = [_button("Answer", ANSWER_ACTION, question_id, "primary")]
        where = trusted("*Answer* opens the form.")
    buttons += [
        _button("Decline", DECLINE_ACTION, question_id),
        _button("Cancel", CANCEL_ACTION, question_id),
    ]
    rule = ours(
        "{where} Only <@" + turn.user + "> can answer; no answer within {minutes} cancels it.",
        where=where,
        minutes=_minutes(timeout),
    )
    heading = _heading(question, turn.user)
    blocks = [
        _section(f"{heading}\n{_message(question)}"),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": rule}]},
        {"type": "actions", "block_id": "question", "elements": buttons},
    ]
    return Message(trusted(f"{question.server} asks you a question"), blocks)


def unaskable_card(turn: Turn, question: Question, why: str) -> Message:
    said = ours("I can't show this question in Slack ({why}), so I declined it.", why=why)
    blocks = [_section(f"{_heading(question, turn.user)}\n{_message(question)}"), _context(said)]
    return Message(trusted(f"{question.server} asked a question I declined"), blocks)


def closed_card(turn: Turn, question: Question, outcome: str, timeout: float) -> Message:
    said = trusted(OUTCOMES.get(outcome, "Closed.").format(who=f"<@{turn.user}>", minutes=_minutes(timeout)))
    blocks = [_section(f"{_heading(question, turn.user)}\n{_message(question)}"), _context(said)]
    return Message(trusted(f"{question.server}'s question: {outcome}"), blocks)


def _context(text: str) -> JSON:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def form_view(question_id: str, server: str, message: str, schema: Any) -> JSON | None:
    """The modal asking the form's fields (None: the schema cannot be asked as a form)."""
    fields = form_fields(schema)
    if isinstance(fields, str):
        return None
    intro = ours("*{server}* asks:\n", server=server) + untrusted(message[:MESSAGE_MAX])
    return {
        "type": "modal",
        "callback_id": FORM_CALLBACK_ID,
        "private_metadata": question_id,
        "title": {"type": "plain_text", "text": "Answer the question"},
        "submit": {"type": "plain_text", "text": "Submit"},
        "close": {"type": "plain_text", "text": "Not now"},
        "blocks": [_section(intro), *form_blocks(fields)],
    }


def only_asker(user: str) -> Mrkdwn:
    return trusted(f"Only <@{user}> can answer this question: it came from their request.")


class SlackQuestionCards:
    """flows.server_questions.QuestionCards in Slack."""

    def __init__(self, poster: Poster) -> None:
        self._poster = poster

    async def post(
        self, turn: Turn, question_id: str, question: Question, *, timeout: float
    ) -> str | Unaskable:
        card = question_card(turn, question_id, question, timeout)
        shown = unaskable_card(turn, question, card.reason) if isinstance(card, Unaskable) else card
        posted = await self._poster.post(
            turn.channel,
            text=shown.text,
            blocks=shown.blocks,
            thread_ts=turn.thread_ts,
            marker=f"{turn.id}:question:{question_id}",
        )
        return card if isinstance(card, Unaskable) else posted.ts

    async def closed(
        self, turn: Turn, card_ts: str, question: Question, outcome: str, *, timeout: float
    ) -> None:
        card = closed_card(turn, question, outcome, timeout)
        await self._poster.update(turn.channel, card_ts, text=card.text, blocks=card.blocks)
